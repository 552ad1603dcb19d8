"""Bottleneck adapters (Houlsby et al.; the π-Tuning code): x + up(relu(down(x))) after the
attention output and the feed-forward output of every layer. The adapter hangs off the target
Linear (see HookedExpert): no base weight is copied or replaced."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from pizoo.errors import UsageError
from pizoo.experts import register
from pizoo.experts.base import (
    RANK_HELP,
    TARGETS_HELP,
    HookedExpert,
    model_types,
    option,
)

CHILD = "pizoo_adapter"
# Attention output projection and feed-forward output projection, per architecture family.
_BERT = r".*layer\.\d+\.(attention\.output|output)\.dense"
_LLAMA = r".*layers\.\d+\.(self_attn\.o_proj|mlp\.down_proj)"
_CLIP = r".*layers\.\d+\.(self_attn\.out_proj|mlp\.fc2)"
_DINO = r".*layer\.\d+\.(attention\.o_proj|mlp\.fc2)"
_T5 = r".*block\.\d+\.layer\.\d+\.(SelfAttention\.o|DenseReluDense\.wo)"
DEFAULT_TARGETS = {"t5": _T5, "mt5": _T5, "umt5": _T5, "distilbert": r".*layer\.\d+\.(attention\.out_lin|ffn\.lin2)",
                   "bert": _BERT, "roberta": _BERT, "xlm-roberta": _BERT, "electra": _BERT,
                   "clip_text_model": _CLIP, "clip_vision_model": _CLIP, "dinov2": _DINO,
                   "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA}


@dataclass(frozen=True)
class AdapterOptions:
    r: int = option(16, flag="--rank", help=RANK_HELP)
    target_modules: Any = option(None, flag="--targets", help=TARGETS_HELP)


class Bottleneck(nn.Module):
    def __init__(self, dim: int, r: int):
        super().__init__()
        self.down = nn.Linear(dim, r)
        self.up = nn.Linear(r, dim)
        nn.init.zeros_(self.up.weight)  # a fresh adapter is the identity
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        return x + self.up(self.down(x).relu())


@register
class Adapter(HookedExpert):
    name = "adapter"
    child = CHILD
    Options = AdapterOptions
    default_lr = 2e-3
    unmergeable = "a bottleneck adapter sits behind a ReLU, so it cannot be folded into the base weights exactly"

    def default_options(self, model_type) -> dict[str, Any]:
        """Every tower's sites: a dual encoder gets adapters in its text and its vision layers."""
        found = sorted({DEFAULT_TARGETS[t] for t in model_types(model_type) if t in DEFAULT_TARGETS})
        return {**super().default_options(model_type), "target_modules": "|".join(found) or None}

    def normalize_options(self, options, model_type):
        opts = super().normalize_options(options, model_type)
        targets = opts["target_modules"]
        if not targets:
            raise UsageError(f"no default adapter sites for model type {model_types(model_type)[0]!r}: pass --targets "
                             "with a regex over module names, e.g. --targets '.*layers\\.\\d+\\.mlp\\.down_proj'")
        if isinstance(targets, list):
            targets = "|".join(targets)
        try:
            re.compile(targets)
        except re.error as e:
            raise UsageError(f"--targets {targets!r} is not a valid regular expression: {e}")
        opts["target_modules"] = targets
        return opts

    def attach(self, model: nn.Module, options: dict[str, Any], head) -> nn.Module:
        pattern = re.compile(options["target_modules"])
        sites = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)]
        if not sites:
            raise UsageError(f"--targets {options['target_modules']!r} matches no Linear layer of the base model")
        for _, module in sites:
            self.hang(module, Bottleneck(module.out_features, options["r"]))
        return model

    def site(self, name: str) -> str:
        return name.split(f".{CHILD}.")[0]
