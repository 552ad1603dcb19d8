"""The registry of expert kinds: one module per kind, one `register` line each."""

from __future__ import annotations

from pizoo.experts.base import ExpertKind
from pizoo.registry import Registry

KINDS: Registry[ExpertKind] = Registry("expert kind", "--kind")
register = KINDS.register
get_kind = KINDS.get_one


from pizoo.experts import adalink, adapter, lora, prompt  # noqa: E402,F401  (each registers itself)
