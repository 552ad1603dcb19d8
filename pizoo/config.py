"""Frozen specs: what a zoo is (zoo.toml) and what a task folder says about itself (task.json)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from dataclasses import dataclass, field
from typing import Any

import tomli_w
import tomllib

from pizoo.errors import SchemaError, UsageError

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)  # schema 1: before heads were plug-ins; its zoos open as before


@dataclass(frozen=True)
class ZooSpec:
    """One zoo = one base model, one head type, one expert kind with fixed options.

    Every expert of the zoo lives in the parameter space these fields define.
    """

    base_model: str
    fingerprint: str
    model_type: str
    head: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    head_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    trust_remote_code: bool = False
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        # The head's name and options are checked against the head registry when the zoo is made
        # (init) and when a model is loaded; reading a spec must not import torch.
        if not isinstance(self.head, str) or not self.head:
            raise UsageError(f"--head {self.head!r} is not a head name")

    @property
    def expert_space(self) -> dict[str, Any]:
        """What two experts must share to be mixed or compared."""
        return {"fingerprint": self.fingerprint, "head": self.head, "head_options": self.head_options,
                "kind": self.kind, "options": self.options}

    def to_toml(self) -> str:
        doc = {
            "schema_version": self.schema_version,
            "base_model": {"name": self.base_model, "fingerprint": self.fingerprint,
                           "model_type": self.model_type, "trust_remote_code": self.trust_remote_code},
            "head": {"type": self.head, "options": self.head_options},
            "expert": {"kind": self.kind, "options": self.options},
            # seeds the shared initial expert and head of every task, and the probe expert
            "seed": self.seed,
        }
        return tomli_w.dumps(doc)

    @classmethod
    def from_toml(cls, text: str, where: str = "zoo.toml") -> "ZooSpec":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SchemaError(f"{where} is not valid TOML: {e}") from e
        version = doc.get("schema_version")
        if version not in READABLE_SCHEMAS:
            raise SchemaError(
                f"{where} has schema_version {version!r}; this pizoo reads versions "
                f"{', '.join(map(str, READABLE_SCHEMAS))}",
                "pip install -U pizoo, or point --zoo at a zoo made by this version",
            )
        try:
            base, head, expert = doc["base_model"], doc["head"], doc["expert"]
            if version == 1:  # schema 1 kept the causal-lm templates beside the head's type
                head_options = ({k: head[k] for k in ("template", "pair_template") if k in head}
                                if head["type"] == "causal-lm" else {})
            else:
                head_options = dict(head.get("options", {}))
            return cls(
                base_model=base["name"], fingerprint=base["fingerprint"], model_type=base["model_type"],
                trust_remote_code=bool(base.get("trust_remote_code", False)),
                head=head["type"], head_options=head_options,
                kind=expert["kind"], options=dict(expert.get("options", {})),
                seed=int(doc.get("seed", 0)), schema_version=version,
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise SchemaError(f"{where} lacks a required field: {e}") from e


def merge_options(defaults: dict[str, Any], given: dict[str, Any], owner: str,
                  flag_of: dict[str, str] | None = None) -> dict[str, Any]:
    """`given` over `defaults` (None keeps the default); an option the owner lacks is an error
    naming the flag the user typed."""
    merged = dict(defaults)
    for key, value in given.items():
        if value is None:
            continue
        if key not in merged:
            raise UsageError(f"{(flag_of or {}).get(key, key)} does not apply to {owner}")
        merged[key] = value
    return merged


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class TaskManifest:
    """task.json: what a task folder holds, where it came from, and how well it does."""

    name: str
    labels: tuple[str, ...]
    source: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=now_iso)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if not self.labels:
            raise SchemaError(f"task {self.name!r} has no labels")

    def replace(self, **changes) -> "TaskManifest":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> "TaskManifest":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise SchemaError(f"{where} is not valid JSON: {e}") from e
        if not isinstance(d, dict) or d.get("schema_version") not in READABLE_SCHEMAS:
            got = d.get("schema_version") if isinstance(d, dict) else None
            raise SchemaError(f"{where} has schema_version {got!r}; this pizoo reads versions "
                              f"{', '.join(map(str, READABLE_SCHEMAS))}",
                              "pip install -U pizoo")
        try:
            m = cls(name=d["name"], labels=tuple(d["labels"]) if isinstance(d["labels"], list) else d["labels"],
                    source=d["source"], files=d.get("files", {}), metrics=d.get("metrics", {}),
                    provenance=d.get("provenance", {}), created=d.get("created", ""), schema_version=d["schema_version"])
        except KeyError as e:
            raise SchemaError(f"{where} lacks the field {e}") from e
        m.check_types(where)
        return m

    def check_types(self, where: str) -> None:
        """A task.json edited by hand or by another tool: every field of the type pizoo writes."""
        bad = None
        if not isinstance(self.name, str):
            bad = "name is not a string"
        elif not isinstance(self.labels, tuple) or not all(isinstance(x, str) for x in self.labels):
            bad = "labels is not a list of strings"
        elif not isinstance(self.files, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                         for k, v in self.files.items()):
            bad = "files is not a mapping of file name to sha256"
        else:
            for field_ in ("source", "metrics", "provenance"):
                if not isinstance(getattr(self, field_), dict):
                    bad = f"{field_} is not a mapping"
            if bad is None and "columns" in self.source:
                bad = _columns_problem(self.source["columns"])
        if bad:
            raise SchemaError(f"{where}: {bad}", "pizoo verify")


_COLUMN_KEYS = ("text", "text_pair", "label", "image", "label_template", "choices", "boxes")


def _columns_problem(cols: Any) -> str | None:
    """What is wrong with the `columns` record of a task's source (as pizoo.data.Columns.record writes it)."""
    if not isinstance(cols, dict):
        return "source.columns is not a mapping"
    unknown = sorted(set(cols) - {*_COLUMN_KEYS, "verbalizer"})
    if unknown:
        return f"source.columns has unknown keys {unknown}"
    for key in _COLUMN_KEYS:
        if cols.get(key) is not None and not isinstance(cols[key], str):
            return f"source.columns.{key} is not a column name"
    if not isinstance(cols.get("label"), str):
        return "source.columns has no label column"
    verbalizer = cols.get("verbalizer")
    if verbalizer is not None and not (isinstance(verbalizer, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                                             for k, v in verbalizer.items())):
        return "source.columns.verbalizer is not a mapping of label to word"
    return None
