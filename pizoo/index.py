"""The zoo-wide embedding index, `<zoo>/index.h5`: a fixed-size sketch of every task's embedding,
so that ranking 10,000 tasks is one matrix product; the exact Fisher vectors then rerank the top
candidates. numpy and h5py only: ranking never imports torch.

A sketch is a count sketch (feature hashing with random signs, seeded per tensor name) of the
Fisher vector. Two views per embedding group:

  cosine      f / ‖f‖: inner products of sketches estimate the cosine of the full vectors
  pertensor   every tensor scaled to unit norm (then 1/√T): a scale-free view that ranks like
              `normalized`, which compares tensor by tensor and ignores each tensor's scale

The file is plain HDF5 (other tools can read it): `names` (utf-8), `sha256` (of each task's
fisher.h5 when it was sketched), `<group>/<view>` float32 arrays of shape (tasks, WIDTH), rows
unit-normalised, and `mean/<group>/<view>`: the zoo mean of each array's rows (of the tasks that
have that embedding), rewritten with the rows on every write.

Fisher vectors are non-negative and share a large common part (what every task's gradient
touches), so by plain cosine the task nearest that common part is everyone's neighbour (a hub).
The `centred` metric compares what is left once the zoo mean is taken away: the cosine of
(s_a − m) and (s_b − m) on the cosine view's sketches s and their mean m. A sketch is linear in
the vector it sketches, so this estimates the cosine of the unit Fisher vectors less their zoo
mean, as well as the plain sketch estimates the plain cosine; ranking a new task against it costs
one more matrix-vector product. The zoo rewrites it atomically, under its lock, whenever a task's
embedding changes; `pizoo verify` reports a stale index and rebuilds it.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import h5py
import numpy as np

from pizoo.errors import CorruptFile, IncompatibleExperts, MissingEmbedding

INDEX = "index.h5"
WIDTH = 1024
SEED = 1729
GROUPS = ("expert", "probe")  # the two Fisher embeddings of a task: at its own expert, at the shared probe
VIEWS = ("cosine", "pertensor")
VIEW_OF_METRIC = {"cosine": "cosine", "normalized": "pertensor", "centred": "cosine"}
MEAN = "mean"
VERSION = 1


# -- fisher.h5, read without torch -----------------------------------------------------------
def read_h5(path: Path, group: str = "expert") -> tuple[dict[str, np.ndarray], dict]:
    """One group of a fisher.h5 with the file's attributes; a bad file is a clear error."""
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            if group not in f:
                raise MissingEmbedding(f"{path} has no '{group}' embedding", "pizoo embed NAME")
            tensors = {name: np.asarray(ds[()], dtype=np.float32) for name, ds in f[group].items()}
    except (OSError, KeyError) as e:
        raise CorruptFile(f"{path} is not a readable fisher.h5 ({e})", "pizoo embed NAME") from e
    return tensors, attrs


def check_space(attrs: dict, spec, where: str) -> None:
    """Embeddings from another base model or expert spec are never compared."""
    want = {"base_fingerprint": spec.fingerprint, "head": spec.head, "kind": spec.kind,
            "options": json.dumps(spec.options, sort_keys=True), "zoo_seed": spec.seed}
    if "head_options" in attrs:  # written since heads have options (schema 2)
        want["head_options"] = json.dumps(spec.head_options, sort_keys=True)
    for key, value in want.items():
        if attrs.get(key) != value:
            raise IncompatibleExperts(f"{where} was computed with {key}={attrs.get(key)!r}; this zoo has "
                                      f"{key}={value!r}", "recompute it: pizoo embed --all")


# -- sketches ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _hashes(name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    return rng.integers(0, WIDTH, size), rng.integers(0, 2, size).astype(np.float64) * 2 - 1


def _count_sketch(vec: Mapping[str, np.ndarray], scale: Mapping[str, float]) -> np.ndarray:
    out = np.zeros(WIDTH)
    for name in sorted(vec):
        x = np.asarray(vec[name], dtype=np.float64).ravel()
        idx, sign = _hashes(name, x.size)
        out += np.bincount(idx, weights=sign * x * scale[name], minlength=WIDTH)
    norm = np.linalg.norm(out)
    return (out / norm if norm > 0 else out).astype(np.float32)


def sketch(vec: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The two sketch views of one embedding."""
    norms = {n: float(np.linalg.norm(v)) for n, v in vec.items()}
    total = float(np.sqrt(sum(x * x for x in norms.values())))
    t = len(vec)
    return {"cosine": _count_sketch(vec, {n: 1.0 / total if total else 0.0 for n in vec}),
            "pertensor": _count_sketch(vec, {n: 1.0 / (norms[n] * np.sqrt(t)) if norms[n] else 0.0 for n in vec})}


# -- the index file --------------------------------------------------------------------------
class Index:
    """The sketches of every embedded task, as one matrix per group and view."""

    def __init__(self, names: list[str], sha: list[str], arrays: dict[str, np.ndarray],
                 tasks: list[str] | None = None, means: dict[str, np.ndarray] | None = None):
        self.names, self.sha, self.arrays = names, sha, arrays
        self.tasks = tasks if tasks is not None else list(names)  # every task of the zoo when written
        self.row = {n: i for i, n in enumerate(names)}
        # as read from the file; an index written before means were kept computes them from its rows
        self.means = {k: means[k] if means and k in means else mean_of(v) for k, v in arrays.items()}

    @classmethod
    def empty(cls) -> "Index":
        return cls([], [], {f"{g}/{v}": np.zeros((0, WIDTH), np.float32) for g in GROUPS for v in VIEWS})

    @classmethod
    def read(cls, path: Path, keys: Iterable[str] | None = None) -> "Index | None":
        """The index, or None when there is none (or it is unreadable: verify rebuilds it)."""
        if not path.is_file():
            return None
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("version") != VERSION or f.attrs.get("width") != WIDTH:
                    return None
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["names"][()]]
                sha = [s.decode() if isinstance(s, bytes) else str(s) for s in f["sha256"][()]]
                tasks = [t.decode() if isinstance(t, bytes) else str(t) for t in f["tasks"][()]]
                want = list(keys) if keys is not None else [f"{g}/{v}" for g in GROUPS for v in VIEWS]
                arrays = {k: np.asarray(f[k][()], dtype=np.float32) for k in want}
                means = {k: np.asarray(f[f"{MEAN}/{k}"][()], dtype=np.float64) for k in want if f"{MEAN}/{k}" in f}
        except (OSError, KeyError, ValueError):
            return None
        return cls(names, sha, arrays, tasks, means)

    def write(self, path: Path) -> None:
        with h5py.File(path, "w") as f:
            f.attrs["version"] = VERSION
            f.attrs["width"] = WIDTH
            f.attrs["seed"] = SEED
            f.attrs["about"] = "pizoo task-embedding sketches; see pizoo/index.py"
            text = h5py.string_dtype("utf-8")
            f.create_dataset("names", data=np.array(self.names, dtype=object), dtype=text)
            f.create_dataset("sha256", data=np.array(self.sha, dtype=object), dtype=text)
            f.create_dataset("tasks", data=np.array(self.tasks, dtype=object), dtype=text)
            for key, arr in self.arrays.items():
                f.create_dataset(key, data=arr, dtype=np.float32)
                f.create_dataset(f"{MEAN}/{key}", data=mean_of(arr), dtype=np.float64)

    @classmethod
    def of(cls, rows: list[tuple[str, str, dict[str, dict[str, np.ndarray]]]]) -> "Index":
        """An index of (name, sha, sketches) rows in one pass (with_task copies every array per
        task: quadratic over a whole zoo)."""
        names = [n for n, _, _ in rows]
        arrays = {}
        for g in GROUPS:
            for v in VIEWS:
                zero = np.zeros(WIDTH, np.float32)
                arrays[f"{g}/{v}"] = (np.stack([sk.get(g, {}).get(v, zero) for _, _, sk in rows]).astype(np.float32)
                                      if rows else np.zeros((0, WIDTH), np.float32))
        return cls(names, [sha for _, sha, _ in rows], arrays)

    def covering(self, tasks: list[str]) -> "Index":
        """The same index, recorded as covering exactly these tasks of the zoo."""
        return Index(self.names, self.sha, self.arrays, list(tasks))

    def with_task(self, name: str, sha: str, sketches: dict[str, dict[str, np.ndarray]]) -> "Index":
        """A copy with one task's rows set (added or replaced); groups it lacks get zero rows."""
        names, shas = list(self.names), list(self.sha)
        arrays = {k: v.copy() for k, v in self.arrays.items()}
        if name in self.row:
            i = self.row[name]
            shas[i] = sha
        else:
            names.append(name)
            shas.append(sha)
            arrays = {k: np.vstack([v, np.zeros((1, WIDTH), np.float32)]) for k, v in arrays.items()}
            i = len(names) - 1
        for key in arrays:
            group, view = key.split("/")
            arrays[key][i] = sketches.get(group, {}).get(view, np.zeros(WIDTH, np.float32))
        return Index(names, shas, arrays)

    def without(self, name: str) -> "Index":
        if name not in self.row:
            return self
        keep = [i for i, n in enumerate(self.names) if n != name]
        return Index([self.names[i] for i in keep], [self.sha[i] for i in keep],
                     {k: v[keep] for k, v in self.arrays.items()})

    def scores(self, row: np.ndarray, group: str, metric: str) -> np.ndarray:
        """Every task's sketch similarity to the sketch `row` (of the metric's view)."""
        key = f"{group}/{VIEW_OF_METRIC[metric]}"
        arr = self.arrays[key]
        if metric != "centred":
            return arr @ row
        return centred_scores(arr, self.means[key], row)

    def candidates(self, name: str, group: str, metric: str, count: int | None, exclude: Iterable[str] = (),
                   row: np.ndarray | None = None) -> list[tuple[str, float]]:
        """The `count` tasks (None: all) whose sketches are closest to `name`'s (one matrix product),
        with their sketch similarity; `row` ranks a sketch that is not in the index (new data)."""
        arr = self.arrays[f"{group}/{VIEW_OF_METRIC[metric]}"]
        scores = self.scores(arr[self.row[name]] if row is None else row, group, metric)
        banned = ~arr.any(axis=1)  # tasks without an embedding of this group
        banned[[self.row[n] for n in (name, *exclude) if n in self.row]] = True
        scores[banned] = -np.inf
        left = int((~banned).sum())
        count = left if count is None else min(count, left)
        if count <= 0:
            return []
        top = np.argpartition(-scores, count - 1)[:count]
        return [(self.names[i], float(scores[i])) for i in top[np.argsort(-scores[top], kind="stable")]]

    def matrix(self, names: list[str], group: str, metric: str) -> np.ndarray:
        """Sketch similarities among `names` (for figures of zoos too large to compare exactly)."""
        key = f"{group}/{VIEW_OF_METRIC[metric]}"
        arr = self.arrays[key][[self.row[n] for n in names]].astype(np.float64)
        if metric == "centred":
            arr = arr - self.means[key]
            arr /= np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)
        m = np.clip(arr @ arr.T, -1.0, 1.0)
        np.fill_diagonal(m, 1.0)
        return m


def mean_of(arr: np.ndarray) -> np.ndarray:
    """The mean of the rows that hold an embedding (zero rows: tasks without one)."""
    held = arr[arr.any(axis=1)] if len(arr) else arr
    return held.mean(axis=0, dtype=np.float64) if len(held) else np.zeros(arr.shape[1] if arr.ndim == 2 else WIDTH)


def centred_scores(arr: np.ndarray, mean: np.ndarray, row: np.ndarray) -> np.ndarray:
    """cos(r_i − m, row − m) for every row r_i of `arr`, without forming arr − m."""
    row_c = row.astype(np.float64) - mean
    dots = arr @ row_c - float(mean @ row_c)
    norms = np.sqrt(np.maximum(np.einsum("ij,ij->i", arr, arr, dtype=np.float64) - 2 * (arr @ mean) + mean @ mean,
                               0.0))
    denom = norms * float(np.linalg.norm(row_c))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)
    return out


def sketches_of(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Both groups of one fisher.h5, sketched (a group the file lacks is left out)."""
    out = {}
    for group in GROUPS:
        try:
            vec, _ = read_h5(path, group)
        except MissingEmbedding:
            continue
        out[group] = sketch(vec)
    return out
