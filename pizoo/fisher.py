"""Task embeddings: the diagonal of the empirical Fisher of the expert parameters,

    F = (1/N) Σ_j g_j²,   g_j = ∇_φ log p(y_j | x_j)   for ONE example j,

not the square of a mini-batch gradient (what Task2Vec and the π-Tuning code compute).

Fast path, one ordinary forward+backward per batch: hooks see each expert Linear's input x and
output gradient δ, and form Σ_j (Σ_t δ_jt x_jtᵀ)² layer by layer, so no per-example copy of the
whole expert ever exists. Prompt rows are prepended to the backbone's input embeddings; their
per-example gradient is the gradient of those input positions (peft builds one prompt and repeats
it over the batch, so a hook on the prompt parameter would see the batch sum). Any other tensor
falls back to a per-example loop.

A part every example shares (the match head's label texts) is run once: each example's gradient
at that part's output is tiny to form (the scoring after it), and one batched backward through the
part (autograd's `is_grads_batched`, a vmap over the examples' cotangents) gives every example's
gradient of the expert tensors it reaches, with no copy of its forward. A head may also run the
backbone on more rows than there are examples (image-text: each example's own label texts after its
caption): `em.owner` maps each row of a forward to its example, and every tensor's per-example
gradient is summed over all the rows and forwards of its example before it is squared, once per
batch."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import torch
from torch import nn

from pizoo import __version__, progress
from pizoo.errors import MissingEmbedding, UsageError
from pizoo.heads.base import to_device
from pizoo.index import GROUPS, check_space, read_h5  # noqa: F401  (the readers live where torch is not needed)

if TYPE_CHECKING:  # annotations only: the model layer would add transformers and peft here
    from pizoo.models import ExpertModel

DEFAULT_SAMPLES = 256
METHOD = "per-example-empirical-fisher"


def _owner(root: nn.Module, live_name: str) -> tuple[nn.Module, str]:
    path, attr = live_name.rsplit(".", 1)
    return root.get_submodule(path), attr


class _Capture:
    """Hooks that accumulate Σ_j g_j² for the tensors they have a rule for."""

    def __init__(self, em: ExpertModel, names: Sequence[str]):
        self.em, self.handles = em, []
        self.sums: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}  # per-example gradients of the batch being processed
        self.n, self.active = 0, True
        self.covered: set[str] = set()
        by_module: dict[nn.Module, dict[str, str]] = {}
        for name in names:
            if name in em.kind.prefix_parameters:
                self._hook_prefix(name)
                continue
            module, attr = _owner(em.wrapped, em.live_name(em.expert[name]))
            if isinstance(module, nn.Linear) and attr in ("weight", "bias"):
                by_module.setdefault(module, {})[attr] = name
        for module, attrs in by_module.items():
            self.handles.append(module.register_forward_hook(self._linear_hook(attrs)))
            self.covered.update(attrs.values())

    def begin(self, n: int) -> None:
        """A batch of `n` examples starts."""
        self.n, self.grads, self.active = n, {}, True

    @contextmanager
    def paused(self):
        """Forwards in here are not watched (their per-example gradients are formed otherwise)."""
        self.active = False
        try:
            yield
        finally:
            self.active = True

    def end(self) -> None:
        """The batch's backward is done: add Σ_j g_j² of every tensor."""
        for name, g in self.grads.items():
            sq = g.square().sum(0).float()
            self.sums[name] = self.sums[name] + sq if name in self.sums else sq
        self.grads = {}

    def _add(self, name: str, per_row: torch.Tensor, owner: torch.Tensor | None) -> None:
        """Per-row gradient pieces of one forward, summed into their examples' gradients (in the
        rows' precision, as autograd sums them), then carried on in float64."""
        if owner is None:  # every row is its own example
            g = per_row
        else:
            g = torch.zeros((self.n, *per_row.shape[1:]), device=per_row.device, dtype=per_row.dtype)
            g.index_add_(0, owner.to(per_row.device), per_row)
        g = g.double()
        self.grads[name] = self.grads[name] + g if name in self.grads else g

    def _linear_hook(self, attrs: dict[str, str]):
        def hook(module, args, output):
            if not output.requires_grad or not self.active:
                return
            x = args[0].detach()
            owner = self.em.owner  # read now: the backward runs after the forward has returned

            def on_grad(delta):
                # the per-example gradient in the activations' precision (as autograd forms it for
                # one example), carried on in float64: summed over rows and squared without loss
                d = delta.detach()
                if d.dim() == 2:  # (B, out): no sequence axis
                    d, xx = d[:, None], x[:, None]
                else:
                    xx = x
                if "weight" in attrs:
                    self._add(attrs["weight"], torch.einsum("bto,bti->boi", d, xx.to(d.dtype)), owner)
                if "bias" in attrs:
                    self._add(attrs["bias"], d.sum(1), owner)

            output.register_hook(on_grad)

        return hook

    def _hook_prefix(self, name: str) -> None:
        n = self.em.prefix
        module, how = self.em.kind.prefix_site(self.em)

        def watch(embeds):
            if embeds is None or not embeds.requires_grad or not self.active:
                return
            owner = self.em.owner
            embeds.register_hook(lambda g: self._add(name, g[:, :n].detach(), owner))

        if how == "output":
            handle = module.register_forward_hook(lambda mod, args, out: watch(out))
        else:
            handle = module.register_forward_pre_hook(lambda mod, args, kw: watch(kw.get(how)), with_kwargs=True)
        self.handles.append(handle)
        self.covered.add(name)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def fisher_diag(em: ExpertModel, rows: Sequence[dict], *, batch_size: int = 32, method: str = "hooks",
                desc: str = "fisher") -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of the expert tensors of `em`, as it is now, over `rows`.

    `method="loop"` is the batch-1 oracle (slow, exact by construction)."""
    if not rows:
        raise MissingEmbedding("no examples to compute a Fisher embedding from")
    names = list(em.expert)
    sums = {n: torch.zeros(em.expert[n].shape, dtype=torch.float32, device=em.device) for n in names}
    with _differentiable(em, names):
        capture = _Capture(em, names) if method == "hooks" else None
        fallback = [n for n in names if capture is None or n not in capture.covered]
        try:
            with progress.task(desc, len(rows)) as advance:
                for i in range(0, len(rows), batch_size):
                    chunk = rows[i: i + batch_size]
                    if capture is not None:
                        _hooked_batch(em, chunk, capture, names)
                    if fallback:
                        _one_by_one(em, chunk, fallback, sums)
                    advance(len(chunk))
            for n, s in (capture.sums.items() if capture is not None else ()):
                sums[n] += s
        finally:
            if capture is not None:
                capture.close()
    return {n: (s / len(rows)).cpu() for n, s in sums.items()}


@contextmanager
def _differentiable(em: ExpertModel, names: list[str]):
    """The expert tensors require grad and dropout is off, for the block; both restored after."""
    params = [em.expert[n] for n in names]
    was_training, flags = em.wrapped.training, [p.requires_grad for p in params]
    em.wrapped.eval()
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        em.wrapped.train(was_training)


def _hooked_batch(em: ExpertModel, chunk: Sequence[dict], capture: _Capture, names: list[str]) -> None:
    """One batch's per-example squared gradients into `capture`: the hooks take the per-row side;
    where the head scores candidates shared by the batch (split_log_probs), the shared side is one
    backward per example, batched, through the tiny scoring after the shared output."""
    capture.begin(len(chunk))
    split = em.head_type.split_log_probs(em, chunk, capture.paused)
    if split is None:
        logp = em.log_probs(to_device(em.collate(chunk, per_example=True), em.device))
    else:
        logp, shared, leaf = split
        eye = torch.eye(len(chunk), dtype=logp.dtype, device=logp.device)
        cot = torch.autograd.grad(logp, leaf, eye, is_grads_batched=True, retain_graph=True)[0]
    torch.autograd.grad(logp.sum(), [em.expert[n] for n in names], allow_unused=True)
    if split is not None:
        covered = [n for n in names if n in capture.covered]
        grads = torch.autograd.grad(shared, [em.expert[n] for n in covered], cot,
                                    is_grads_batched=True, allow_unused=True)
        for n, g in zip(covered, grads):
            if g is not None:
                capture._add(n, g, None)
    capture.end()


def _one_by_one(em: ExpertModel, chunk: Sequence[dict], names: list[str], sums: dict[str, torch.Tensor]) -> None:
    """The batch-1 path for the tensors no hook covers (and the whole oracle)."""
    params = [em.expert[n] for n in names]
    for row in chunk:
        one = to_device(em.collate([row]), em.device)
        grads = torch.autograd.grad(em.log_probs(one).sum(), params, allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                sums[n] += g.detach().square().to(sums[n].dtype)


def choose(rows: Sequence[dict], samples: int | None, seed: int) -> list[dict]:
    samples = DEFAULT_SAMPLES if samples is None else samples
    if samples < 1:
        raise UsageError(f"--samples must be at least 1, got {samples}")
    if len(rows) <= samples:
        return list(rows)
    return random.Random(seed).sample(list(rows), samples)


def probe_fisher(em: ExpertModel, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
    """The Fisher at the zoo's shared probe expert (and a probe head seeded the same way)."""
    saved = em.state()
    probe = em.kind.probe({n: p.shape for n, p in em.expert.items()}, em.spec.seed)
    try:
        with torch.no_grad():
            for n, t in probe.items():
                em.expert[n].copy_(t)
        if em.head:
            em.init_head(em.spec.seed)
        return fisher_diag(em, rows, desc="fisher (probe)")
    finally:
        em.load_state(saved, where="saved state")


def attrs_for(em: ExpertModel, n_samples: int, seed: int) -> dict[str, str | int]:
    spec = em.spec
    return {"n_samples": n_samples, "method": METHOD, "base_fingerprint": spec.fingerprint, "head": spec.head,
            "head_options": json.dumps(spec.head_options, sort_keys=True),
            "kind": spec.kind, "options": json.dumps(spec.options, sort_keys=True), "sample_seed": seed,
            "zoo_seed": spec.seed, "pizoo_version": __version__}


def write_h5(path: Path, groups: dict[str, dict[str, torch.Tensor]], attrs: dict) -> None:
    with h5py.File(path, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        for group, tensors in groups.items():
            g = f.create_group(group)
            for name in sorted(tensors):
                g.create_dataset(name, data=tensors[name].numpy().astype(np.float32))


def embedding_writer(em: ExpertModel, rows: Sequence[dict], *, seed: int = 0, samples: int | None = None,
                     groups: Sequence[str] = GROUPS):
    """Compute the embedding now; return the writer to hand to the zoo (TaskFiles.embedding)."""
    chosen = choose(rows, samples, seed)
    computed = {}
    if "expert" in groups:
        computed["expert"] = fisher_diag(em, chosen, desc="fisher (expert)")
    if "probe" in groups:
        computed["probe"] = probe_fisher(em, chosen)
    attrs = attrs_for(em, len(chosen), seed)
    return lambda p: write_h5(p, computed, attrs)
