"""The registry of expert kinds: one module per kind, one `register` line each."""

from __future__ import annotations

from pizoo.errors import UsageError
from pizoo.experts.base import ExpertKind

KINDS: dict[str, ExpertKind] = {}


def register(cls: type[ExpertKind]) -> type[ExpertKind]:
    KINDS[cls.name] = cls()
    return cls


def get_kind(name: str) -> ExpertKind:
    try:
        return KINDS[name]
    except KeyError:
        raise UsageError(f"--kind {name!r} is not a known expert kind; choose one of {', '.join(sorted(KINDS))}")


from pizoo.experts import adalink, adapter, lora, prompt  # noqa: E402,F401  (each registers itself)
