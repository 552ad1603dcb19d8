"""LoRA through peft: W x + (alpha/r) B A x on the target Linear layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peft import LoraConfig, TaskType, get_peft_model
from peft.utils.constants import (
    TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS,
)
from torch import nn

from pizoo.basemodel import is_dual
from pizoo.errors import UsageError
from pizoo.experts import register
from pizoo.experts.base import (
    RANK_HELP,
    TARGETS_HELP,
    ExpertKind,
    model_types,
    option,
    strip_adapter_name,
)

if TYPE_CHECKING:  # annotations only: the model layer imports this module (a cycle)
    from pizoo.models import ExpertModel


@dataclass(frozen=True)
class LoraOptions:
    # peft's own defaults, so an adapter made with LoraConfig() imports as is
    r: int = option(8, flag="--rank", help=RANK_HELP)
    lora_alpha: int = option(8, flag="--alpha", help="LoRA scaling alpha (the update is alpha/r · B A).")
    target_modules: Any = option(None, flag="--targets", help=TARGETS_HELP)
    lora_dropout: float = option(0.0, flag="--dropout", help="LoRA dropout.")
    use_dora: bool = option(False)
    use_rslora: bool = option(False)
    bias: str = option("none")


# Architectures peft has no default LoRA targets for, and the two towers of dual encoders: the
# attention query and value projections, as peft picks for its own entries.
MORE_TARGETS = {"clip": ("q_proj", "v_proj"), "clip_text_model": ("q_proj", "v_proj"),
                "clip_vision_model": ("q_proj", "v_proj"), "siglip": ("q_proj", "v_proj"),
                "siglip_text_model": ("q_proj", "v_proj"), "siglip_vision_model": ("q_proj", "v_proj"),
                "dinov2": ("q_proj", "v_proj"), "vit": ("query", "value")}
# A dual encoder's projections into its shared space: each expert may also move them (low rank).
PROJECTIONS = ("text_projection", "visual_projection")


def default_targets(model_types: tuple[str, ...]) -> list[str] | None:
    """peft's targets (or ours) for the model and every tower of it; a dual encoder's projections."""
    found = [t for mt in model_types for t in (PEFT_TARGETS.get(mt) or MORE_TARGETS.get(mt) or ())]
    if not found:
        return None
    return sorted(set(found) | (set(PROJECTIONS) if is_dual(model_types) else set()))




def peft_task_type(head) -> TaskType:
    """peft's task type for the head (its model wrapper; SEQ_CLS also trains the task's head)."""
    return TaskType[head.peft_task_type]


@register
class Lora(ExpertKind):
    name = "lora"
    peft_type = "LORA"
    foldable = True
    Options = LoraOptions
    default_lr = 2e-3  # measured on the packaged MiniLM, 32 shots: better than 5e-4, 5e-3 and 1e-2
    peft_config_keys = ("r", "lora_alpha", "target_modules", "use_dora", "use_rslora", "bias")

    def default_options(self, model_type) -> dict[str, Any]:
        return {**super().default_options(model_type), "target_modules": default_targets(model_types(model_type))}

    def normalize_options(self, options, model_type):
        opts = super().normalize_options(options, model_type)
        if isinstance(opts["target_modules"], str):  # --targets q_proj,v_proj
            opts["target_modules"] = [t.strip() for t in opts["target_modules"].split(",") if t.strip()]
        if not opts["target_modules"]:
            raise UsageError(f"peft has no default LoRA targets for model type {model_types(model_type)[0]!r}: "
                             "pass --targets, e.g. --targets q_proj,v_proj")
        opts["target_modules"] = sorted(opts["target_modules"])
        return opts

    def attach(self, model: nn.Module, options: dict[str, Any], head) -> nn.Module:
        config = LoraConfig(task_type=peft_task_type(head), r=options["r"], lora_alpha=options["lora_alpha"],
                            target_modules=list(options["target_modules"]), lora_dropout=options["lora_dropout"],
                            use_dora=options["use_dora"], use_rslora=options["use_rslora"], bias=options["bias"])
        return get_peft_model(model, config)

    def merge(self, em: ExpertModel) -> nn.Module:
        return em.wrapped.merge_and_unload()  # W + (alpha/r) B A, by peft

    def parameters(self, wrapped: nn.Module) -> dict[str, nn.Parameter]:
        return {strip_adapter_name(n): p for n, p in wrapped.named_parameters() if ".lora_" in n}

    def site(self, name: str) -> str:
        return name.rsplit(".lora_", 1)[0]

    def probe_scale(self, name: str) -> float:
        return 0.1 if ".lora_B" in name else 1.0
