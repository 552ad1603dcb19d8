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

SCHEMA_VERSION = 1
HEADS = ("classification", "causal-lm")
DEFAULT_TEMPLATE = "{text}\nAnswer:"
DEFAULT_PAIR_TEMPLATE = "{text}\n{text_pair}\nAnswer:"


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
    template: str = DEFAULT_TEMPLATE
    pair_template: str = DEFAULT_PAIR_TEMPLATE
    seed: int = 0
    trust_remote_code: bool = False
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if self.head not in HEADS:
            raise UsageError(f"--head {self.head!r} is not one of {', '.join(HEADS)}")
        if self.head == "causal-lm":
            if "{text}" not in self.template:
                raise UsageError(f"--template {self.template!r} must contain {{text}}")

    @property
    def expert_space(self) -> dict[str, Any]:
        """What two experts must share to be mixed or compared."""
        return {"fingerprint": self.fingerprint, "head": self.head, "kind": self.kind, "options": self.options}

    def to_toml(self) -> str:
        doc = {
            "schema_version": self.schema_version,
            "base_model": {"name": self.base_model, "fingerprint": self.fingerprint,
                           "model_type": self.model_type, "trust_remote_code": self.trust_remote_code},
            "head": {"type": self.head, "template": self.template, "pair_template": self.pair_template},
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
        if version != SCHEMA_VERSION:
            raise SchemaError(
                f"{where} has schema_version {version!r}; this pizoo reads version {SCHEMA_VERSION}",
                "pip install -U pizoo, or point --zoo at a zoo made by this version",
            )
        try:
            base, head, expert = doc["base_model"], doc["head"], doc["expert"]
            return cls(
                base_model=base["name"], fingerprint=base["fingerprint"], model_type=base["model_type"],
                trust_remote_code=bool(base.get("trust_remote_code", False)),
                head=head["type"], template=head.get("template", DEFAULT_TEMPLATE),
                pair_template=head.get("pair_template", DEFAULT_PAIR_TEMPLATE),
                kind=expert["kind"], options=dict(expert.get("options", {})),
                seed=int(doc.get("seed", 0)), schema_version=version,
            )
        except (KeyError, TypeError) as e:
            raise SchemaError(f"{where} lacks a required field: {e}") from e


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
            raise UsageError(f"task {self.name!r} has no labels")

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
        if not isinstance(d, dict) or d.get("schema_version") != SCHEMA_VERSION:
            got = d.get("schema_version") if isinstance(d, dict) else None
            raise SchemaError(f"{where} has schema_version {got!r}; this pizoo reads version {SCHEMA_VERSION}",
                              "pip install -U pizoo")
        try:
            return cls(name=d["name"], labels=tuple(d["labels"]), source=d["source"], files=d.get("files", {}),
                       metrics=d.get("metrics", {}), provenance=d.get("provenance", {}),
                       created=d.get("created", ""), schema_version=d["schema_version"])
        except KeyError as e:
            raise SchemaError(f"{where} lacks the field {e}") from e
