"""Typed results of the library's operations. `to_json()` gives exactly what the CLI prints with
`--json` (docs/JSON.md; tests/test_json.py holds the keys): one schema for the library, the CLI,
the README and the tests. Task records themselves are `TaskManifest` (pizoo.config)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def optional(default=None):
    """A field left out of the JSON while it is None (a key only some results have)."""
    return field(default=default, metadata={"optional": True})


@dataclass(frozen=True)
class Result:
    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if not (value is None and f.metadata.get("optional")):
                out[f.metadata.get("key", f.name)] = value
        return out


@dataclass(frozen=True)
class Evaluation(Result):
    """`pizoo eval`: a task's expert on a split or a file."""
    task: str
    accuracy: float
    n: int
    data: str
    labels: list[str]
    accuracy_iou50: float | None = optional()  # box tasks: the chosen box at IoU >= 0.5 with the gold


@dataclass(frozen=True)
class Neighbour(Result):
    """One row of the embedding ranking (pizoo.embed.similar)."""
    rank: int
    task: str
    similarity: float


@dataclass(frozen=True)
class Landscape(Result):
    """`pizoo landscape`: the loss and accuracy over the plane through three experts."""
    target: str
    with_: list[str] = field(metadata={"key": "with"})
    resolution: int
    margin: float
    n: int
    values: list[float]
    grid: list[dict]
    points: list[dict]


@dataclass(frozen=True)
class HyperTraining(Result):
    """`pizoo hyper train`: the hypernetwork's record, as stored beside its weights."""
    spec: dict
    sketch_dim: int
    names: list[str]
    kind: str
    provenance: dict
    expert_space: dict
    training: dict
    steps: int
    train_seconds: float
    loss_first: float
    loss_last: float
    accuracy: dict[str, float]
    parameters: dict[str, int]


@dataclass(frozen=True)
class Export(Result):
    """`pizoo export`: what was written where."""
    task: str
    format: str
    out: str
    files: list[str]
