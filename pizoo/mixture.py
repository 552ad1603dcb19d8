"""The π-Tuning mixture, as pure tensor code: no zoo, no files.

For every expert tensor, φ̄ = softmax(α)_0 φ_target + Σ_i softmax(α)_i φ_i  (paper, Eq. 4), formed
functionally at each step from the k+1 expert tensors: the base model is shared and never copied.
Mode `full` trains α and all k+1 experts (the paper's default), `alpha` trains α only ("only
scale"). The result has the shape of one expert, so inference costs what one expert costs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from pizoo.errors import UsageError

if TYPE_CHECKING:  # annotations only: the model layer would add transformers and peft here
    from pizoo.models import ExpertModel

MODES = ("full", "alpha")
GRANULARITIES = ("expert", "layer")
INITS = ("uniform", "target")
TARGET_WEIGHT = 0.9  # softmax weight of the target's expert under --init target


@dataclass(frozen=True)
class MixSpec:
    mode: str = "full"
    granularity: str = "expert"
    init: str = "uniform"

    def __post_init__(self):
        for flag, value, allowed in (("--mode", self.mode, MODES), ("--granularity", self.granularity, GRANULARITIES),
                                     ("--init", self.init, INITS)):
            if value not in allowed:
                raise UsageError(f"{flag} {value!r} is not one of {', '.join(allowed)}")


class Mixture(nn.Module):
    """softmax(α)-weighted sum of k+1 experts, applied to the model `em` functionally.

    Source 0 is the target and uses `em`'s own live expert tensors; sources 1..k are extra
    tensors (the only memory the mixture adds). The task head is the target's, never mixed."""

    def __init__(self, em: ExpertModel, sources: Sequence[dict[str, torch.Tensor]], spec: MixSpec):
        super().__init__()
        self.em, self.spec = em, spec
        self.model = em.wrapped  # registered so accelerate places and syncs it
        self.names = list(em.expert)
        train_experts = spec.mode == "full"
        self.extra = nn.ModuleList()
        for src in sources:
            plist = nn.ParameterList([nn.Parameter(src[n].detach().clone().to(em.device, torch.float32),
                                                   requires_grad=train_experts) for n in self.names])
            self.extra.append(plist)
        for p in em.expert.values():
            p.requires_grad_(train_experts)
        for p in em.head.values():  # the target's head: tuned with the experts, fixed in alpha mode
            p.requires_grad_(train_experts)
        sites = [em.kind.site(n) for n in self.names] if spec.granularity == "layer" else ["expert"] * len(self.names)
        self.site_names = list(dict.fromkeys(sites))
        self.register_buffer("group", torch.tensor([self.site_names.index(s) for s in sites]), persistent=False)
        k1 = len(sources) + 1
        alpha = torch.zeros(len(self.site_names), k1)
        if spec.init == "target":
            alpha[:, 0] = math.log(TARGET_WEIGHT * (k1 - 1) / (1 - TARGET_WEIGHT)) if k1 > 1 else 0.0
        self.alpha = nn.Parameter(alpha.to(em.device))

    @property
    def k(self) -> int:
        return len(self.extra)

    def weights(self) -> torch.Tensor:
        """softmax(α): one row of k+1 weights per α group."""
        return self.alpha.softmax(-1)

    def mixed(self) -> dict[str, torch.Tensor]:
        w = self.weights()
        out = {}
        for j, name in enumerate(self.names):
            wj = w[self.group[j]]
            t = wj[0] * self.em.expert[name]
            for i, plist in enumerate(self.extra):
                t = t + wj[i + 1] * plist[j]
            out[name] = t
        return out

    def forward(self, batch):
        return -self.em.log_probs(batch, self.mixed()).mean()

    def result(self) -> dict[str, torch.Tensor]:
        """The interpolated expert (one expert's shape) plus the target's head."""
        with torch.no_grad():
            mixed = {n: t.detach().cpu().clone() for n, t in self.mixed().items()}
        return {**mixed, **{n: p.detach().cpu().clone() for n, p in self.em.head.items()}}

    def alpha_record(self) -> dict[str, list[float]]:
        w = self.weights().detach().cpu().tolist()
        return {site: [round(x, 6) for x in row] for site, row in zip(self.site_names, w)}


def lerp(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    """(1-t)·a + t·b for every tensor: a point on the linear path between two experts."""
    return {n: (1 - t) * a[n] + t * b[n] for n in a}


def uniform(experts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {n: sum(e[n] for e in experts) / len(experts) for n in experts[0]}


