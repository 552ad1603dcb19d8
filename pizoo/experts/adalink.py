"""AdaLink (Wang et al., 2023): a low-rank residual on the input embeddings, E + (E W_down) W_up.

Non-intrusive: nothing inside the transformer blocks changes, and since it acts on embedding rows
only, it folds exactly into the embedding matrix for a merged export."""

from __future__ import annotations

from typing import Any

from torch import nn

from pizoo.experts import register
from pizoo.experts.base import ExpertKind

CHILD = "pizoo_adalink"


class LowRankResidual(nn.Module):
    def __init__(self, dim: int, r: int):
        super().__init__()
        self.down = nn.Linear(dim, r, bias=False)
        self.up = nn.Linear(r, dim, bias=False)
        nn.init.zeros_(self.up.weight)  # a fresh AdaLink leaves the model unchanged

    def forward(self, x):
        return x + self.up(self.down(x))


def _run_adalink(module, args, output):
    return getattr(module, CHILD)(output)


@register
class AdaLink(ExpertKind):
    name = "adalink"
    foldable = True
    flags = {"r": "--rank"}
    default_lr = 5e-3

    def default_options(self, model_type: str) -> dict[str, Any]:
        return {"r": 4}

    def attach(self, model: nn.Module, options: dict[str, Any], head: str) -> nn.Module:
        emb = model.get_input_embeddings()
        emb.add_module(CHILD, LowRankResidual(emb.embedding_dim, options["r"]).to(emb.weight.device))
        emb.register_forward_hook(_run_adalink)
        return model

    def parameters(self, wrapped: nn.Module) -> dict[str, nn.Parameter]:
        return {n: p for n, p in wrapped.named_parameters() if f".{CHILD}." in n}

    def site(self, name: str) -> str:
        return "input_embeddings"

    def probe_scale(self, name: str) -> float:
        return 0.1 if ".up." in name else 1.0
