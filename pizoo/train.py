"""The one training loop. add-task and interpolate both run it.

Built on HF Accelerate, so device placement, mixed precision and data parallelism come from
the engine: `accelerate launch -m pizoo add-task ...` runs the same code on several GPUs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

from pizoo import progress
from pizoo.errors import TrainingError, UsageError
from pizoo.progress import log

if TYPE_CHECKING:  # annotations only: the model layer would add transformers and peft here
    from pizoo.models import ExpertModel

_accelerator = None
_accelerator_key = None


@dataclass(frozen=True)
class TrainConfig:
    epochs: int | None = None
    steps: int | None = None
    lr: float = 5e-3
    batch_size: int = 16
    grad_accum: int = 1
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "no"  # no | bf16 | fp16

    def __post_init__(self):
        if self.epochs is not None and self.steps is not None:
            raise UsageError("give --epochs or --steps, not both")
        for flag, v in (("--epochs", self.epochs), ("--steps", self.steps), ("--batch-size", self.batch_size),
                        ("--grad-accum", self.grad_accum)):
            if v is not None and v < 1:
                raise UsageError(f"{flag} must be at least 1, got {v}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UsageError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in ("no", "bf16", "fp16"):
            raise UsageError(f"--precision must be no, bf16 or fp16, got {self.precision!r}")


@dataclass(frozen=True)
class TrainResult:
    steps: int
    examples: int
    seconds: float
    first_loss: float
    last_loss: float
    is_main_process: bool


def accelerator(cfg: TrainConfig):
    """One Accelerator per process (its state is a singleton); rebuilt only if the settings change."""
    global _accelerator, _accelerator_key
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {cfg.device} but torch sees no CUDA device", "use --device cpu")
    key = (cpu, cfg.precision, cfg.grad_accum)
    if _accelerator is None or _accelerator_key != key:
        if _accelerator is not None:
            AcceleratorState._reset_state(reset_partial_state=False)
        _accelerator = Accelerator(cpu=cpu, mixed_precision=cfg.precision, gradient_accumulation_steps=cfg.grad_accum)
        _accelerator_key = key
    return _accelerator


def device_for(cfg: TrainConfig) -> torch.device:
    return accelerator(cfg).device


DEFAULT_EPOCHS = 10


def planned_steps(cfg: TrainConfig, n_rows: int, processes: int = 1) -> int:
    """The optimizer steps `fit` will take on `n_rows` examples."""
    batches = math.ceil(math.ceil(n_rows / cfg.batch_size) / processes)
    return cfg.steps or max(1, (cfg.epochs or DEFAULT_EPOCHS) * math.ceil(batches / cfg.grad_accum))


def fit(module: nn.Module, rows: Sequence[dict], collate: Callable[[Sequence[dict]], dict], cfg: TrainConfig,
        *, desc: str = "train", log_every: int = 10, lr_overrides: dict[int, float] | None = None
        ) -> TrainResult:
    """Minimise `module(batch)` (a scalar loss) over `rows` with AdamW, warmup and linear decay.

    `lr_overrides` maps id(parameter) to its own learning rate (e.g. the mixture weights α)."""
    acc = accelerator(cfg)
    params, groups = _param_groups(module, lr_overrides or {})
    module, opt, loader, sched, total = _prepared(acc, module, groups, rows, collate, cfg)
    module.train()
    if acc.is_main_process:
        log.info(f"{desc}: {total} steps over {len(rows)} examples, batch {cfg.batch_size}, lr {cfg.lr:g}, "
            f"on {acc.device}")
    step, seen, shown, window = 0, 0, 0, _Window(acc.device)
    start = time.perf_counter()
    with progress.task(desc, total, enabled=acc.is_main_process, loss=float("nan")) as advance:
        while step < total:
            for batch in loader:
                with acc.accumulate(module):
                    loss = module(batch)
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm:
                        acc.clip_grad_norm_(params, cfg.max_grad_norm)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                window.add(loss)
                seen += len(batch["labels"])  # every head's batch carries one label per example
                if not acc.sync_gradients:
                    continue
                step += 1
                if step % log_every == 0 or step == total or step == 1:
                    advance(step - shown, loss=window.read(step))
                    shown = step
                if step >= total:
                    break
    module.eval()
    return TrainResult(step, seen, time.perf_counter() - start, window.first, window.last, acc.is_main_process)


def _prepared(acc, module: nn.Module, groups: list[dict], rows: Sequence[dict], collate, cfg: TrainConfig):
    """The module, AdamW, the seeded shuffling loader and the warmup/linear-decay schedule, prepared
    by accelerate; and the number of optimizer steps. The run is seeded by cfg.seed: the loader's
    order and the global generator (dropout masks; torch seeds it at random in each process), so it
    is reproducible, and runs compared with each other (k auto's probes) see the same batches and
    the same masks: a paired comparison."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(list(rows), batch_size=cfg.batch_size, shuffle=True, collate_fn=collate, generator=gen)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    module, opt, loader = acc.prepare(module, opt, loader)
    # Epochs count this process's share of the batches (accelerate shards them over processes).
    total = cfg.steps or max(1, (cfg.epochs or DEFAULT_EPOCHS) * math.ceil(len(loader) / cfg.grad_accum))
    # accelerate steps a prepared scheduler once per process per optimizer step
    n = acc.num_processes
    sched = acc.prepare(get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total) * n, total * n))
    return module, opt, loader, sched, total


def _param_groups(module: nn.Module, lr_overrides: dict[int, float]) -> tuple[list[nn.Parameter], list[dict]]:
    """The trainable parameters, and AdamW's groups: one at the run's lr, one per overridden lr."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("nothing to train: the module has no trainable parameters")
    groups = [{"params": [p for p in params if id(p) not in lr_overrides]}]
    groups += [{"params": [p], "lr": lr_overrides[id(p)]} for p in params if id(p) in lr_overrides]
    return params, [g for g in groups if g["params"]]


class _Window:
    """The mean loss of the steps since it was last read; one host sync per read, not per step
    (.item() stalls a GPU). Remembers the first and the last mean read."""

    def __init__(self, device):
        self.total, self.count = torch.zeros((), device=device), 0
        self.first = self.last = float("nan")

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach()
        self.count += 1

    def read(self, step: int) -> float:
        mean = float(self.total) / self.count
        self.total.zero_()
        self.count = 0
        if not math.isfinite(mean):
            raise TrainingError(f"the loss became {mean} by step {step}; nothing was saved",
                                "lower --lr (e.g. by 10x) and run again")
        self.first = mean if math.isnan(self.first) else self.first
        self.last = mean
        return mean


class ExpertLoss(nn.Module):
    """The training objective of one expert: mean negative log-likelihood of the labels."""

    def __init__(self, em: ExpertModel):
        super().__init__()
        self.em = em
        self.model = em.wrapped  # a submodule, so accelerate and DDP place and sync it

    def forward(self, batch):
        return -self.em.log_probs(batch).mean()
