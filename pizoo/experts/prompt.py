"""Prompt tuning: learned virtual-token embeddings prepended to every text input.

On a text model peft does it (and writes the adapter folder). On a dual encoder (CLIP-style, or
a VisionTextDualEncoderModel) the prompt sits in the text tower only, which reads the label texts
of every task and the inputs of text tasks: for an image task it is CoOp's learned context in front
of the class names. The image tower has no token table and is left as it is."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import PromptTuningConfig, get_peft_model
from torch import nn

from pizoo.basemodel import is_dual
from pizoo.errors import ExportError, UsageError
from pizoo.experts import register
from pizoo.experts.base import ExpertKind, option
from pizoo.experts.lora import peft_task_type

if TYPE_CHECKING:  # annotations only: the model layer imports this module (a cycle)
    from pizoo.models import ExpertModel

NAME = "prompt_embeddings"  # the key peft writes for it
HOLDER = "pizoo_prompt"  # the module that holds the prompt of a dual encoder's text tower
TOWER = "text_model"


@dataclass(frozen=True)
class PromptOptions:
    num_virtual_tokens: int = option(8, flag="--virtual-tokens", help="Number of learned virtual tokens.")


def _token_table(model: nn.Module) -> nn.Embedding | None:
    try:
        table = model.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        return None
    return table if isinstance(table, nn.Embedding) else None


def _text_tower(model: nn.Module) -> nn.Module | None:
    """A dual encoder's text tower (None for a model without a vision tower)."""
    return getattr(model, TOWER, None) if is_dual(model) else None


class _Holder(nn.Module):
    def __init__(self, rows: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(rows.clone())


def _prepend(tower: nn.Module, table: nn.Embedding, holder: _Holder, n: int) -> None:
    """Hooks that give `tower` n leading positions whose input embeddings are `holder.weight`:
    placeholder ids (and attention) in front of every sequence, their embedding rows replaced."""
    config = tower.config
    eos = getattr(config, "eos_token_id", None)
    placeholder = 1 if eos == 0 else 0  # CLIP pools at its end token: a placeholder is never one
    limit = getattr(config, "max_position_embeddings", None)
    armed = []

    def pre_hook(module, args, kwargs):
        if len(args) > 1:  # the attention mask would be positional, and left without the prompt's positions
            raise UsageError("a text tower with a prompt is called with keyword arguments (input_ids=..., "
                             "attention_mask=...)")
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise UsageError("prompt tuning on a dual encoder's text tower needs token ids")
        if limit is not None and ids.shape[1] + n > limit:
            raise UsageError(f"a text of {ids.shape[1]} tokens and {n} virtual tokens exceed the text tower's "
                             f"{limit} positions", "use shorter texts (--max-length) or fewer --virtual-tokens")
        lead = ids.new_full((ids.shape[0], n), placeholder)
        kwargs = {**kwargs, "input_ids": torch.cat([lead, ids], 1)}
        for key, fill in (("attention_mask", 1), ("token_type_ids", 0)):
            if kwargs.get(key) is not None:
                kwargs[key] = torch.cat([kwargs[key].new_full((ids.shape[0], n), fill), kwargs[key]], 1)
        armed.append(True)
        return args[1:] if args else args, kwargs

    def embed_hook(module, args, output):
        if not armed:  # the table used outside the tower's forward: left alone
            return None
        armed.pop()
        rows = holder.weight.to(output.dtype)
        return torch.cat([rows.expand(output.shape[0], *rows.shape), output[:, n:]], 1)

    tower.register_forward_pre_hook(pre_hook, with_kwargs=True)
    table.register_forward_hook(embed_hook)


@register
class Prompt(ExpertKind):
    name = "prompt"
    peft_type = "PROMPT_TUNING"
    Options = PromptOptions
    default_lr = 3e-2
    unmergeable = "prompt tuning adds virtual tokens to the input, which no weight can hold"
    peft_config_keys = ("num_virtual_tokens",)
    prefix_parameters = (NAME,)

    def attach(self, model: nn.Module, options: dict[str, Any], head) -> nn.Module:
        n = options["num_virtual_tokens"]
        tower = _text_tower(model)
        table = _token_table(tower if tower is not None else model)
        if table is None or (tower is None and hasattr(model, "vision_model")):  # an image encoder alone
            raise UsageError("prompt tuning needs a token-embedding table, and this model has none "
                             "(an image encoder reads patches, not tokens)",
                             "pizoo init --kind lora (or adapter, adalink)")
        # Start from real token embeddings (drawn with the caller's seed) rather than N(0, 1):
        # the scale then matches the inputs the frozen model was trained on.
        draw = lambda: table.weight[torch.randint(0, table.weight.shape[0], (n,))].detach()  # noqa: E731
        if tower is not None:
            model.add_module(HOLDER, _Holder(draw()))
            _prepend(tower, table, getattr(model, HOLDER), n)
            return model
        # Prompts on the (encoder) input only, as Lester et al. tune T5: peft's default for
        # encoder-decoders would also prepend a second prompt to the decoder.
        config = PromptTuningConfig(task_type=peft_task_type(head), num_virtual_tokens=n, num_transformer_submodules=1)
        wrapped = get_peft_model(model, config)
        with torch.no_grad():
            self.parameters(wrapped)[NAME].copy_(draw())
        return wrapped

    def parameters(self, wrapped: nn.Module) -> dict[str, nn.Parameter]:
        if hasattr(wrapped, HOLDER):
            return {NAME: getattr(wrapped, HOLDER).weight}
        return {NAME: wrapped.prompt_encoder["default"].embedding.weight}

    def prefix_site(self, em: ExpertModel) -> tuple[nn.Module, str]:
        """Where the prompt rows enter: the text tower's token table's output on a dual encoder
        (the rows are its first positions), else the backbone's `inputs_embeds` (peft passes them)."""
        if hasattr(em.wrapped, HOLDER):
            return _token_table(getattr(em.hf, TOWER)), "output"
        return em.hf, "inputs_embeds"

    def peft_module(self, config: dict[str, Any]) -> str:
        return TOWER if "vision_config" in config and "text_config" in config else ""

    def save_peft(self, em: ExpertModel, folder: Path) -> None:
        if not hasattr(em.wrapped, HOLDER):
            return super().save_peft(em, folder)
        tower = getattr(em.hf, TOWER)
        if "inputs_embeds" not in inspect.signature(tower.forward).parameters:
            raise ExportError(f"peft cannot run a prompt on this model's text tower ({type(tower).__name__} "
                              "takes no inputs_embeds, which peft's prompt tuning passes)",
                              "use the expert inside pizoo, or build the zoo with --kind lora or adalink")
        n = em.prefix
        config = PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=n, num_transformer_submodules=1)
        peft_model = get_peft_model(tower, config)
        with torch.no_grad():
            peft_model.prompt_encoder["default"].embedding.weight.copy_(self.parameters(em.wrapped)[NAME])
        peft_model.save_pretrained(str(folder))

    def site(self, name: str) -> str:
        return "prompt"

    def prefix_length(self, options: dict[str, Any]) -> int:
        return options["num_virtual_tokens"]
