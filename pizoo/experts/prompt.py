"""Prompt tuning through peft: learned virtual-token embeddings prepended to every input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from peft import PromptTuningConfig, get_peft_model
from torch import nn

from pizoo.errors import UsageError
from pizoo.experts import register
from pizoo.experts.base import ExpertKind, option
from pizoo.experts.lora import peft_task_type

NAME = "prompt_embeddings"  # the key peft writes for it


@dataclass(frozen=True)
class PromptOptions:
    num_virtual_tokens: int = option(8, flag="--virtual-tokens", help="Number of learned virtual tokens.")


def _has_token_table(model: nn.Module) -> bool:
    try:
        return isinstance(model.get_input_embeddings(), nn.Embedding)
    except NotImplementedError:
        return False


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
        if hasattr(model, "vision_model") or not _has_token_table(model):
            raise UsageError("prompt tuning is not available on models with a vision tower yet "
                             "(peft prepends the prompt to the whole model's input, which a dual encoder "
                             "splits between its towers and an image encoder does not read as tokens)",
                             "pizoo init --kind lora (or adapter, adalink)")
        n = options["num_virtual_tokens"]
        # Prompts on the (encoder) input only, as Lester et al. tune T5: peft's default for
        # encoder-decoders would also prepend a second prompt to the decoder.
        config = PromptTuningConfig(task_type=peft_task_type(head), num_virtual_tokens=n, num_transformer_submodules=1)
        wrapped = get_peft_model(model, config)
        # Start from real token embeddings (drawn with the caller's seed) rather than N(0, 1):
        # the scale then matches the inputs the frozen model was trained on.
        vocab = model.get_input_embeddings().weight
        rows = torch.randint(0, vocab.shape[0], (n,))
        with torch.no_grad():
            self.parameters(wrapped)[NAME].copy_(vocab[rows])
        return wrapped

    def parameters(self, wrapped: nn.Module) -> dict[str, nn.Parameter]:
        return {NAME: wrapped.prompt_encoder["default"].embedding.weight}

    def site(self, name: str) -> str:
        return "prompt"

    def prefix_length(self, options: dict[str, Any]) -> int:
        return options["num_virtual_tokens"]
