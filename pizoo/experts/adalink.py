"""AdaLink (Wang et al., 2023): a low-rank residual on the input embeddings, E + (E W_down) W_up.

Non-intrusive: nothing inside the transformer blocks changes, and since it acts on embedding rows
only, it folds exactly into the embedding matrix for a merged export.

On a dual encoder, one adapter per modality: one on the text tower's token embeddings and one on
the vision tower's patch embeddings (per patch, over channels), which fold exactly into the token
table and the patch convolution."""

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


class PatchResidual(LowRankResidual):
    """The residual on a patch embedding's output (B, C, H, W): each patch, over its channels."""

    def forward(self, x):
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, H·W, C): one row per patch
        return super().forward(t).transpose(1, 2).reshape(b, c, h, w)


def _towers(model: nn.Module) -> tuple[nn.Embedding, nn.Conv2d] | None:
    """A dual encoder's token table (the text tower's largest embedding) and patch convolution."""
    if not (hasattr(model, "text_model") and hasattr(model, "vision_model")):
        return None
    tables = [m for m in model.text_model.modules() if isinstance(m, nn.Embedding)]
    convs = [m for m in model.vision_model.modules() if isinstance(m, nn.Conv2d)]
    if not tables or not convs:
        return None
    return max(tables, key=lambda m: m.num_embeddings), convs[0]


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
        towers = _towers(model)
        if towers is not None:  # one adapter per modality
            table, conv = towers
            self.hang(table, LowRankResidual(table.embedding_dim, options["r"]))
            self.hang(conv, PatchResidual(conv.out_channels, options["r"]))
            return model
        emb = model.get_input_embeddings()
        low = LowRankResidual(emb.embedding_dim, options["r"])
        for module in _embedding_modules(model):  # one adapter, hung wherever the token table is read
            self.hang(module, low)
        return model

    def merge(self, em) -> nn.Module:
        """E + E·W_downᵀ·W_upᵀ on every embedding row: exact, since AdaLink acts on rows only."""
        model = em.hf
        towers = _towers(model)
        if towers is not None:
            table, conv = towers
            with torch.no_grad():
                low = getattr(table, CHILD)
                table.weight.copy_(table.weight + (table.weight @ low.down.weight.T) @ low.up.weight.T)
                mix = getattr(conv, CHILD).up.weight @ getattr(conv, CHILD).down.weight  # (C, C)
                conv.weight.copy_(conv.weight + torch.einsum("oc,cikl->oikl", mix, conv.weight))
                if conv.bias is not None:
                    conv.bias.copy_(conv.bias + mix @ conv.bias)
            for module in towers:
                delattr(module, CHILD)
                module._forward_hooks.clear()
            return model
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
        return "image_embeddings" if "vision_model." in name else "input_embeddings"
