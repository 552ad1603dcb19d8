"""AdaLink (Wang et al., 2023): a low-rank residual on the input embeddings, E + (E W_down) W_up.

Non-intrusive: nothing inside the transformer blocks changes, and since it acts on embedding rows
only, it folds exactly into the embedding matrix for a merged export."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pizoo.experts import register
from pizoo.experts.base import RANK_HELP, HookedExpert, option

CHILD = "pizoo_adalink"


@dataclass(frozen=True)
class AdaLinkOptions:
    r: int = option(4, flag="--rank", help=RANK_HELP)


class LowRankResidual(nn.Module):
    def __init__(self, dim: int, r: int):
        super().__init__()
        self.down = nn.Linear(dim, r, bias=False)
        self.up = nn.Linear(r, dim, bias=False)
        nn.init.zeros_(self.up.weight)  # a fresh AdaLink leaves the model unchanged

    def forward(self, x):
        return x + self.up(self.down(x))


def _embedding_modules(model: nn.Module) -> list[nn.Embedding]:
    """Every module that reads the input token table: an encoder-decoder (T5) has one per stack,
    sharing one weight."""
    weight = model.get_input_embeddings().weight
    return [m for m in model.modules() if isinstance(m, nn.Embedding) and m.weight is weight]


@register
class AdaLink(HookedExpert):
    name = "adalink"
    child = CHILD
    foldable = True
    Options = AdaLinkOptions
    default_lr = 5e-3

    def attach(self, model: nn.Module, options: dict[str, Any], head) -> nn.Module:
        emb = model.get_input_embeddings()
        low = LowRankResidual(emb.embedding_dim, options["r"])
        for module in _embedding_modules(model):  # one adapter, hung wherever the token table is read
            self.hang(module, low)
        return model

    def merge(self, em) -> nn.Module:
        """E + E·W_downᵀ·W_upᵀ on every embedding row: exact, since AdaLink acts on rows only."""
        model = em.hf
        emb = model.get_input_embeddings()
        low = getattr(emb, CHILD, None) or getattr(_embedding_modules(model)[0], CHILD)
        out_emb = model.get_output_embeddings()
        with torch.no_grad():
            if out_emb is not None and out_emb.weight is emb.weight:
                # tied LM head: untie it so the output layer keeps the original matrix
                out_emb.weight = nn.Parameter(emb.weight.detach().clone())
                model.config.tie_word_embeddings = False
            w = emb.weight
            w.copy_(w + (w @ low.down.weight.T) @ low.up.weight.T)
        for module in _embedding_modules(model):
            delattr(module, CHILD)
            module._forward_hooks.clear()  # the residual now lives in the weights
        return model

    def site(self, name: str) -> str:
        return "input_embeddings"
