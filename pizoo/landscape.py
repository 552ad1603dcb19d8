"""Loss and accuracy over the plane through three experts (the paper's Fig. 3c).

A point (a, b) of the plane is the expert (1 - a - b)·φ_target + a·φ_B + b·φ_C, scored on the
target's eval split with the target's head: (0, 0), (1, 0) and (0, 1) are the three experts
themselves, bit for bit, and (1/3, 1/3) is their uniform soup. The figure draws the plane in
orthonormal coordinates, so distances and angles are the true ones between the experts; a π result
(the target's interpolation with B and C) is marked where it projects, with its distance from the
plane."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from pizoo import progress
from pizoo.errors import UsageError
from pizoo.interpolate import choose_sources, load_expert_part
from pizoo.predict import default_by
from pizoo.results import Landscape

if TYPE_CHECKING:  # annotations only: the model layer would add transformers and peft here
    from pizoo.models import ExpertModel


def axis(resolution: int, margin: float) -> list[float]:
    """Grid values along one coordinate: steps of 1/resolution from -margin to 1 + margin, with 0
    and 1 among them exactly."""
    if resolution < 1:
        raise UsageError(f"--resolution must be at least 1, got {resolution}")
    if not 0 <= margin <= 2:
        raise UsageError(f"--margin must be between 0 and 2, got {margin}")
    extra = math.ceil(margin * resolution - 1e-9)
    return [i / resolution for i in range(-extra, resolution + extra + 1)]


def landscape(zoo, target: str, with_: Sequence[str] | None = None, *, resolution: int = 8,
              margin: float = 0.25, samples: int | None = 256, pi: str | None = None, metric: str = "cosine",
              device: str = "cpu") -> Landscape:
    """The grid over the plane through the target's expert and two others (default: its top 2)."""
    from pizoo.tasks import load_task_model, task_data

    values = axis(resolution, margin)
    if with_ is not None and len(with_) != 2:
        raise UsageError(f"--with names {len(with_)} task(s); the plane goes through the target and two others",
                         "pass two: --with B,C (or leave --with out for the target's top 2)")
    em, manifest = load_task_model(zoo, target, device)
    td = task_data(zoo, target, manifest)
    others = _plane_sources(zoo, target, with_, metric, em, td)
    rows = _eval_rows(em, td, samples)
    A = {n: p.detach().clone() for n, p in em.expert.items()}
    B, C = ({n: t.to(em.device) for n, t in load_expert_part(zoo, s, em).items()} for s in others)

    def at(a: float, b: float) -> dict[str, torch.Tensor]:
        return {n: (1 - a - b) * A[n] + a * B[n] + b * C[n] for n in A}

    to_xy = _orthonormal(A, B, C)
    grid = _grid(em, rows, values, at, to_xy, f"landscape of {target}")
    corners = {(0.0, 0.0): target, (1.0, 0.0): others[0], (0.0, 1.0): others[1]}
    points = [{"name": name, "role": role, "a": a, "b": b, **to_xy(a, b),
               **_scored(em, rows, at(a, b))}
              for (a, b), name, role in [(ab, corners[ab], "target" if ab == (0.0, 0.0) else "source")
                                         for ab in corners] + [((1 / 3, 1 / 3), "uniform soup", "soup")]]
    pi = pi if pi is not None else _pi_task(zoo, target, others)
    if pi is not None:
        phi = {n: t.to(em.device) for n, t in load_expert_part(zoo, pi, em).items()}
        a, b, off = _project(A, B, C, phi)
        points.append({"name": pi, "role": "pi", "a": a, "b": b, **to_xy(a, b), "off_plane": off,
                       **_scored(em, rows, phi)})
    return Landscape(target, others, resolution, margin, len(rows), values, grid, points)


def _plane_sources(zoo, target: str, with_: Sequence[str] | None, metric: str, em: ExpertModel, td) -> list[str]:
    """The two other corners: those named, or the target's top 2 through the one ranking path
    (pizoo.predict), as interpolate takes them."""
    if with_ is not None:
        return [c.task for c in choose_sources(zoo, target, with_=with_, k=2, metric=metric)]
    by = default_by(zoo, has_data=True)
    train = em.encode(td.train, td.label_ids(td.train)) if by != "fisher" else None
    return [c.task for c in choose_sources(zoo, target, k=2, metric=metric, by=by, em=em, rows=train)]


def _eval_rows(em: ExpertModel, td, samples: int | None) -> list[dict]:
    """The target's eval split, or a seeded sample of `samples` of it."""
    ex, ids = td.eval, td.label_ids(td.eval)
    if samples is not None and samples < len(ex):
        if samples < 1:
            raise UsageError(f"--samples must be at least 1, got {samples}")
        keep = sorted(torch.randperm(len(ex), generator=torch.Generator().manual_seed(0))[:samples].tolist())
        ex, ids = ex.subset(keep), [ids[i] for i in keep]
    return em.encode(ex, ids)


def _grid(em: ExpertModel, rows, values: list[float], at, to_xy, desc: str) -> list[dict]:
    """Accuracy and loss at every (a, b) of the grid, b-major."""
    grid = []
    with progress.task(desc, len(values) ** 2) as advance:
        for b in values:
            for a in values:
                grid.append({"a": a, "b": b, **to_xy(a, b), **_scored(em, rows, at(a, b))})
                advance()
    return grid


def _scored(em: ExpertModel, rows, params) -> dict:
    s = em.score(rows, params=params)
    return {"accuracy": s.accuracy, "loss": -s.log_likelihood}


def _flat(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten().cpu() for _, t in sorted(d.items())])


def _orthonormal(A, B, C):
    """(a, b) -> plane coordinates (x, y) in which the three experts sit at their true distances."""
    u, v = _flat(B) - _flat(A), _flat(C) - _flat(A)
    nu = float(u.norm())
    if nu == 0:
        raise UsageError("the target's expert and the first --with expert are identical: they span no plane")
    ex = u / nu
    vx = float(v @ ex)
    vy = float((v - vx * ex).norm())
    if vy <= 1e-12 * max(nu, 1.0):
        raise UsageError("the three experts lie on one line: they span no plane")
    return lambda a, b: {"x": a * nu + b * vx, "y": b * vy}


def _project(A, B, C, phi) -> tuple[float, float, float]:
    """(a, b) of the point of the plane nearest to phi, and phi's distance from the plane relative
    to its distance from the target."""
    a0 = _flat(A)
    M = torch.stack([_flat(B) - a0, _flat(C) - a0], 1)
    d = _flat(phi) - a0
    coef = torch.linalg.lstsq(M, d[:, None]).solution[:, 0]
    resid = float((d - M @ coef).norm())
    return float(coef[0]), float(coef[1]), resid / max(float(d.norm()), 1e-30)


def _pi_task(zoo, target: str, others: Sequence[str]) -> str | None:
    """The task made by interpolating the target with these two sources (or one of them), if any."""
    for name in zoo.task_names():
        try:
            rec = zoo.manifest(name).provenance.get("interpolation") or {}
        except Exception:
            continue
        if (rec.get("target") == target and rec.get("kept", "interpolated") == "interpolated"
                and rec.get("sources") and {s["task"] for s in rec["sources"]} <= set(others)):
            return name
    return None
