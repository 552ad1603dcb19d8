"""The contract every expert kind fulfils. One module per kind; `register` adds it to the registry."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from pizoo.config import merge_options
from pizoo.errors import IncompatibleExperts, UsageError

if TYPE_CHECKING:  # annotations only: the model layer imports this module (a cycle)
    from pizoo.models import ExpertModel

# help of the flags several kinds share: one text per flag
RANK_HELP = "Rank r: LoRA's rank, the bottleneck adapter's width, AdaLink's rank."
TARGETS_HELP = ("Modules to adapt: a comma list for LoRA (default: peft's for the architecture), a regex over "
                "module names for the adapter (default: attention and feed-forward outputs).")


def model_types(model_type) -> tuple[str, ...]:
    """The model's type and its towers' (a dual encoder: ("clip", "clip_text_model", ...))."""
    return (model_type,) if isinstance(model_type, str) else tuple(model_type)


def option(default: Any, *, flag: str | None = None, help: str = "") -> Any:
    """One field of a kind's options: its default, the CLI flag that sets it, and its help text.
    Fields without a flag are kept at their default (or set by an imported adapter's config)."""
    return dataclasses.field(default=default, metadata={"flag": flag, "help": help})


class ExpertKind:
    """A parameter-efficient expert: which tensors it adds to a frozen base model, and how.

    Experts are identified by canonical tensor names (for peft kinds, the names peft writes in
    adapter_model.safetensors), so a zoo's experts are plain dicts of tensors that can be
    stored, compared, mixed and exported without knowing the kind.
    """

    name: ClassVar[str]
    peft_type: ClassVar[str | None] = None  # set when peft can load the expert as an adapter
    foldable: ClassVar[bool] = False  # exactly foldable into the base weights (merged export)
    unmergeable: ClassVar[str] = "it cannot be folded into the base weights exactly"  # why not, if not
    # The kind's options: a frozen dataclass of `option(...)` fields. `pizoo init` has a flag for
    # each field that names one, with its help (a contract test checks both; the flags are not
    # generated at import, which would import torch into every command), and errors name the flag
    # the user typed.
    Options: ClassVar[type]
    default_lr: ClassVar[float] = 1e-3  # AdamW learning rate when --lr is not given

    @property
    def flags(self) -> dict[str, str]:
        """Option name -> the CLI flag that sets it."""
        return {f.name: f.metadata["flag"] for f in dataclasses.fields(self.Options) if f.metadata.get("flag")}

    def default_options(self, model_type: str) -> dict[str, Any]:
        """The Options defaults; a kind fills what depends on the architecture (target modules)."""
        return dataclasses.asdict(self.Options())

    def normalize_options(self, options: dict[str, Any], model_type: str) -> dict[str, Any]:
        """Fill defaults and validate; unknown options and bad values name their flag."""
        merged = merge_options(self.default_options(model_type), options, f"expert kind {self.name!r}", self.flags)
        for key in ("r", "num_virtual_tokens"):
            if key in merged and (not isinstance(merged[key], int) or merged[key] < 1):
                raise UsageError(f"{self.flags.get(key, key)} must be a positive integer, got {merged[key]!r}")
        # an alpha of 0 makes every expert a no-op; dropout is a probability below 1
        if "lora_alpha" in merged and not (isinstance(merged["lora_alpha"], (int, float)) and merged["lora_alpha"] > 0):
            raise UsageError(f"{self.flags.get('lora_alpha', 'lora_alpha')} must be positive, got {merged['lora_alpha']!r}")
        if "lora_dropout" in merged and not (isinstance(merged["lora_dropout"], (int, float))
                                             and 0 <= merged["lora_dropout"] < 1):
            raise UsageError(f"{self.flags.get('lora_dropout', 'lora_dropout')} must be in [0, 1), "
                             f"got {merged['lora_dropout']!r}")
        return merged

    def attach(self, model: nn.Module, options: dict[str, Any], head) -> nn.Module:
        """Add a fresh expert to `model` (in place, or by wrapping it); return the model to call."""
        raise NotImplementedError

    def parameters(self, wrapped: nn.Module) -> dict[str, nn.Parameter]:
        """The expert's live parameters by canonical name, in a stable order."""
        raise NotImplementedError

    def merge(self, em: ExpertModel) -> nn.Module:
        """The base model with this expert folded into its weights, as a plain transformers model
        (only for `foldable` kinds; the expert model is consumed)."""
        raise NotImplementedError

    def site(self, name: str) -> str:
        """The insertion site of a tensor: tensors of one site share one α at layer granularity."""
        raise NotImplementedError

    def prefix_length(self, options: dict[str, Any]) -> int:
        """Positions the expert prepends to every sequence (prompt tokens)."""
        return 0

    # Tensors whose rows are prepended to the backbone's input embeddings (prompt tuning): their
    # per-example gradient is the gradient of those input positions.
    prefix_parameters: ClassVar[tuple[str, ...]] = ()

    def prefix_site(self, em: ExpertModel) -> tuple[nn.Module, str]:
        """Where the prefix rows enter the model: (module, "inputs_embeds"), the keyword argument a
        forward pre-hook on the module sees, or (module, "output"), the module's output; either
        way a (rows, positions, width) tensor whose first `prefix_length` positions are the rows."""
        raise NotImplementedError

    def probe_scale(self, name: str) -> float:
        return 1.0

    def probe(self, shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
        """A seeded, non-degenerate expert shared by the whole zoo to embed tasks comparably.

        A fresh expert has zero up-projections, which makes the Fisher of the down-projections
        exactly zero; the probe gives every tensor a scaled random value instead.
        """
        gen = torch.Generator().manual_seed(seed)
        out = {}
        for name in sorted(shapes):
            shape = shapes[name]
            fan_in = shape[-1] if len(shape) > 1 else 1
            std = self.probe_scale(name) / math.sqrt(fan_in)
            out[name] = (torch.randn(shape, generator=gen) * std) if len(shape) > 1 else torch.zeros(shape)
        return out

    # -- PEFT adapter folders -----------------------------------------------------------------
    peft_config_keys: ClassVar[tuple[str, ...]] = ()

    def peft_module(self, config: dict[str, Any]) -> str:
        """The submodule of the base model (by attribute path; "" for the whole) that the exported
        adapter folder loads on."""
        return ""

    def save_peft(self, em: ExpertModel, folder) -> None:
        """Write the expert as a peft adapter folder (peft kinds: peft writes it)."""
        em.wrapped.save_pretrained(str(folder))

    def check_peft_config(self, config: dict[str, Any], options: dict[str, Any]) -> None:
        """Refuse an adapter_config.json that does not describe this zoo's expert spec."""
        if config.get("peft_type") != self.peft_type:
            raise IncompatibleExperts(
                f"the adapter is a {config.get('peft_type')!r} adapter; this zoo holds {self.peft_type} "
                f"experts (kind {self.name!r})")
        for key in ("rank_pattern", "alpha_pattern"):  # pizoo's experts have one rank and one alpha per zoo
            if config.get(key):
                raise IncompatibleExperts(f"the adapter sets {key} {config[key]!r} (a rank or alpha per module); "
                                          "a zoo's experts share one, and dropping it would change what the adapter "
                                          "does", "retrain the adapter without per-module ranks or alphas")
        for key in self.peft_config_keys:
            want, got = options.get(key), config.get(key)
            if isinstance(want, list) or isinstance(got, list):
                want = sorted(want) if isinstance(want, list) else want
                got = sorted(got) if isinstance(got, list) else got
            if want != got:
                raise IncompatibleExperts(f"adapter has {key}={got!r}, the zoo's experts have {key}={want!r}",
                                          "import into a zoo made with matching options (pizoo init ...)")


class HookedExpert(ExpertKind):
    """A kind written here rather than in peft: a small module hung as a child of a base module
    and applied to that module's output by a forward hook. No base weight is copied or replaced,
    and the expert's tensors are exactly the parameters under the child's name."""

    child: ClassVar[str]

    def hang(self, module: nn.Module, expert: nn.Module) -> None:
        module.add_module(self.child, expert.to(next(module.parameters()).device))
        module.register_forward_hook(_run_child(self.child))

    def parameters(self, wrapped: nn.Module) -> dict[str, nn.Parameter]:
        return {n: p for n, p in wrapped.named_parameters() if f".{self.child}." in n}

    def probe_scale(self, name: str) -> float:
        return 0.1 if ".up." in name else 1.0  # a small up-projection: a gentle, non-zero probe


def _run_child(child: str):
    def hook(module, args, output):
        return getattr(module, child)(output)

    return hook


_DEFAULT_SUFFIX = re.compile(r"\.default(?=\.(weight|bias)$)")


def strip_adapter_name(name: str) -> str:
    """peft's live names carry the adapter name ('default'); its saved files do not."""
    return _DEFAULT_SUFFIX.sub("", name)
