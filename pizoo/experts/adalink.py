"""AdaLink (Wang et al., 2023): a low-rank residual on the input embeddings, E + (E W_down) W_up.

Non-intrusive: nothing inside the transformer blocks changes, and since it acts on embedding rows
only, it folds exactly into the embedding matrix for a merged export."""

from __future__ import annotations

from typing import Any

from torch import nn

from pizoo.experts import register
from pizoo.experts.base import HookedExpert

CHILD = "pizoo_adalink"


class LowRankResidual(nn.Module):
    def __init__(self, dim: int, r: int):
        super().__init__()
        self.down = nn.Linear(dim, r, bias=False)
        self.up = nn.Linear(r, dim, bias=False)
        nn.init.zeros_(self.up.weight)  # a fresh AdaLink leaves the model unchanged

    def forward(self, x):
        return x + self.up(self.down(x))


@register
class AdaLink(HookedExpert):
    name = "adalink"
    child = CHILD
    foldable = True
    flags = {"r": "--rank"}
    default_lr = 5e-3

    def default_options(self, model_type: str) -> dict[str, Any]:
        return {"r": 4}

    def attach(self, model: nn.Module, options: dict[str, Any], head: str) -> nn.Module:
        emb = model.get_input_embeddings()
        self.hang(emb, LowRankResidual(emb.embedding_dim, options["r"]))
        return model

    def site(self, name: str) -> str:
        return "input_embeddings"
