"""Similarity of task embeddings: pure functions over {tensor name: Fisher diagonal} dicts.

cosine      the paper's text: cosine of the concatenated Fisher vectors.
normalized  the π-Tuning code's and Task2Vec's: per tensor, the cosine of a/(a+b+eps) and
            b/(a+b+eps), averaged over tensors. Invariant to each tensor's overall scale.
centred     the cosine after the zoo mean is taken away: a property of the zoo, not of a pair, so
            it is computed on the zoo's index of sketches (pizoo.index), never here."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pizoo.errors import CorruptFile, IncompatibleExperts, UsageError

METRICS = ("cosine", "normalized", "centred")
PAIRWISE = ("cosine", "normalized")
EPS = 1e-8
Vec = Mapping[str, np.ndarray]


def check(vec: Vec, where: str) -> None:
    """Refuse vectors that cannot be compared: NaN/inf, negative, or all zero."""
    total = 0.0
    for name, a in vec.items():
        if not np.all(np.isfinite(a)):
            raise CorruptFile(f"the Fisher embedding of {where} has NaN or infinite values ({name})",
                              f"recompute it: pizoo embed {where}")
        if np.any(a < 0):
            raise CorruptFile(f"the Fisher embedding of {where} has negative values ({name})",
                              f"recompute it: pizoo embed {where}")
        total += float(np.abs(a).sum())
    if total == 0.0:
        raise CorruptFile(f"the Fisher embedding of {where} is all zero: the expert has no gradient signal",
                          f"recompute it on more data: pizoo embed {where} --samples 512")


def _same_names(a: Vec, b: Vec) -> list[str]:
    if set(a) != set(b):
        diff = sorted(set(a) ^ set(b))[:3]
        raise IncompatibleExperts(f"embeddings cover different tensors (e.g. {diff}): different expert specs")
    names = sorted(a)
    for n in names:
        if a[n].shape != b[n].shape:
            raise IncompatibleExperts(f"tensor {n} has shape {a[n].shape} in one embedding, {b[n].shape} in the other")
    return names


def _cos(x: np.ndarray, y: np.ndarray) -> float:
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0.0 or ny == 0.0:
        return 0.0
    return float(np.dot(x, y) / (nx * ny))


def cosine(a: Vec, b: Vec) -> float:
    names = _same_names(a, b)
    x = np.concatenate([a[n].ravel().astype(np.float64) for n in names])
    y = np.concatenate([b[n].ravel().astype(np.float64) for n in names])
    return _cos(x, y)


def normalized(a: Vec, b: Vec, eps: float = EPS) -> float:
    names = _same_names(a, b)
    sims = []
    for n in names:
        x, y = a[n].ravel().astype(np.float64), b[n].ravel().astype(np.float64)
        s = x + y + eps
        sims.append(_cos(x / s, y / s))
    return float(np.mean(sims))


def similarity(a: Vec, b: Vec, metric: str = "cosine") -> float:
    if metric == "cosine":
        return cosine(a, b)
    if metric == "normalized":
        return normalized(a, b)
    if metric == "centred":
        raise UsageError("the centred similarity needs the zoo's mean: rank through the zoo (pizoo.embed)")
    raise UsageError(f"--metric {metric!r} is not one of {', '.join(METRICS)}")


def rank(target: Vec, others: Mapping[str, Vec], metric: str = "cosine") -> list[tuple[str, float]]:
    """Every other task by descending similarity to `target` (ties broken by name)."""
    scored = [(name, similarity(target, vec, metric)) for name, vec in others.items()]
    return sorted(scored, key=lambda t: (-t[1], t[0]))


def matrix(vecs: Mapping[str, Vec], metric: str = "cosine") -> tuple[list[str], np.ndarray]:
    names = sorted(vecs)
    m = np.eye(len(names))
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            m[i, j] = m[j, i] = similarity(vecs[a], vecs[names[j]], metric)
    return names, m
