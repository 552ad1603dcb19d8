"""AdaLink (Wang et al., 2023): a low-rank residual on the input embeddings, E + (E W_down) W_up.

Non-intrusive: nothing inside the transformer blocks changes, and since it acts on embedding rows
only, it folds exactly into the embedding matrix for a merged export.

On a dual encoder, one adapter per modality: one on the text tower's token embeddings and one on
the vision tower's patch embeddings (per patch, over channels), which fold exactly into the token
table and the patch convolution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pizoo.basemodel import is_dual
from pizoo.experts import register
from pizoo.experts.base import RANK_HELP, HookedExpert, option

if TYPE_CHECKING:  # annotations only: the model layer imports this module (a cycle)
    from pizoo.models import ExpertModel

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


def _towers(model: nn.Module) -> list[nn.Module] | None:
    """The inputs of a model with an image side: a dual encoder's token table (the text tower's
    largest embedding) and patch convolution; an image encoder alone's patch convolution. None for
    a text model (its token table: `_embedding_modules`)."""
    if is_dual(model):
        tables = [m for m in model.text_model.modules() if isinstance(m, nn.Embedding)]
        convs = [m for m in model.vision_model.modules() if isinstance(m, nn.Conv2d)]
        return [max(tables, key=lambda m: m.num_embeddings), convs[0]] if tables and convs else None
    try:
        if isinstance(model.get_input_embeddings(), nn.Embedding):
            return None
    except NotImplementedError:
        pass
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[:1] or None


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
            for module in towers:
                if isinstance(module, nn.Embedding):
                    self.hang(module, LowRankResidual(module.embedding_dim, options["r"]))
                else:
                    self.hang(module, PatchResidual(module.out_channels, options["r"]))
            return model
        emb = model.get_input_embeddings()
        low = LowRankResidual(emb.embedding_dim, options["r"])
        for module in _embedding_modules(model):  # one adapter, hung wherever the token table is read
            self.hang(module, low)
        return model

    def merge(self, em: ExpertModel) -> nn.Module:
        """E + E·W_downᵀ·W_upᵀ on every embedding row: exact, since AdaLink acts on rows only."""
        model = em.hf
        towers = _towers(model)
        if towers is not None:
            with torch.no_grad():
                for module in towers:
                    low = getattr(module, CHILD)
                    if isinstance(module, nn.Embedding):  # E + E·W_downᵀ·W_upᵀ on every row
                        module.weight.copy_(module.weight + (module.weight @ low.down.weight.T) @ low.up.weight.T)
                        continue
                    mix = low.up.weight @ low.down.weight  # (C, C): each patch's channels, (I + mix)·y
                    module.weight.copy_(module.weight + torch.einsum("oc,cikl->oikl", mix, module.weight))
                    if module.bias is not None:
                        module.bias.copy_(module.bias + mix @ module.bias)
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
        return "image_embeddings" if "vision_model." in name or "patch_embedding" in name else "input_embeddings"
