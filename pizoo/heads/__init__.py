"""The registry of heads: one module per head, one `register` line each.

A head turns the backbone's outputs into log p(y|x) for one example. Shared-space heads (match,
causal-lm, seq2seq) read every label as text and have no per-task tensors, so any expert can
score any task; `classification` gives each task its own output layer."""

from __future__ import annotations

from typing import Any

from pizoo.heads.base import Head, vision_only
from pizoo.registry import Registry

HEADS: Registry[Head] = Registry("head", "--head")
register = HEADS.register
get_head = HEADS.get_one


def default_head(config: dict[str, Any]) -> str:
    """The shared-space head that fits a model: text-to-text for encoder-decoders, the answer's
    tokens for decoders, and `match` (label texts in the encoder's own embedding space) otherwise."""
    if config.get("is_encoder_decoder"):
        return "seq2seq"
    if vision_only(config):  # no text side to read label texts with: a per-task output layer
        return "classification"
    archs = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "causal-lm"
    return "match"


from pizoo.heads import causal_lm, classification, match, seq2seq  # noqa: E402,F401  (each registers itself)
