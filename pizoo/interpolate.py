"""π-Tuning: interpolate the target's expert with the experts of its most similar tasks.

For every expert tensor, φ̄ = softmax(α)_0 φ_target + Σ_i softmax(α)_i φ_i  (paper, Eq. 4), formed
functionally at each step from the k+1 expert tensors: the base model is shared and never copied.
Mode `full` trains α and all k+1 experts (the paper's default), `alpha` trains α only ("only
scale"). The result has the shape of one expert, so inference costs what one expert costs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pizoo.errors import UsageError

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

    def __init__(self, em, sources: Sequence[dict[str, torch.Tensor]], spec: MixSpec):
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


# -- the zoo-level operations -----------------------------------------------------------------
def choose_sources(zoo, target: str, *, with_: Sequence[str] | None = None, k: int = 2, metric: str = "cosine"
                   ) -> list[tuple[str, float | None]]:
    """The tasks to mix with `target`: the explicit list, or its top-k by Fisher similarity.

    Tasks derived from the target by an earlier interpolation are not independent sources and are
    left out of the ranking."""
    from pizoo.embed import check_k, embedded_tasks, load_embedding
    from pizoo.errors import TaskNotFound
    from pizoo.similarity import rank, similarity

    zoo.manifest(target)
    if with_:
        if target in with_:
            raise UsageError(f"--with names the target {target!r} itself; it is always part of the mixture")
        if len(set(with_)) != len(with_):
            raise UsageError(f"--with names a task twice: {','.join(with_)}")
        for name in with_:
            if not zoo.has_task(name):
                raise TaskNotFound(f"--with names {name!r}, which is not in {zoo.root}", "pizoo list")
        try:  # similarities are informative here, not required
            tv = load_embedding(zoo, target)
            return [(n, similarity(tv, load_embedding(zoo, n), metric)) for n in with_]
        except Exception:
            return [(n, None) for n in with_]
    target_vec = load_embedding(zoo, target)
    derived = {n for n in zoo.task_names()
               if zoo.manifest(n).provenance.get("interpolation", {}).get("target") == target}
    others = embedded_tasks(zoo, "expert", exclude=(target, *sorted(derived)))
    check_k(k, len(others))
    return rank(target_vec, others, metric)[:k]


def load_expert_part(zoo, name: str, em) -> dict[str, torch.Tensor]:
    """A task's expert tensors (no head), checked against the zoo's expert shape."""
    from pizoo.errors import IncompatibleExperts
    from pizoo.models import load_tensors, split_head
    from pizoo.zoo import EXPERT

    expert, _ = split_head(load_tensors(zoo.file(name, EXPERT)))
    if set(expert) != set(em.expert) or any(expert[n].shape != em.expert[n].shape for n in expert):
        raise IncompatibleExperts(f"the expert of task {name!r} does not have this zoo's expert shape "
                                  f"({zoo.spec.kind} on {zoo.spec.base_model})", f"pizoo rm {name} --yes")
    return expert


def interpolate_task(zoo, target: str, cfg, *, with_: Sequence[str] | None = None, k: int = 2,
                     metric: str = "cosine", spec: MixSpec = MixSpec(), shots: int | None = None,
                     alpha_lr: float = 0.05, name: str | None = None, embed: bool = True):
    """Learn the softmax(α) mixture of `target` and its sources on the target's data; save it as a task."""
    import dataclasses

    from pizoo.config import TaskManifest
    from pizoo.fisher import embedding_writer
    from pizoo.models import save_tensors
    from pizoo.render import log
    from pizoo.tasks import load_task_model, provenance, refuse_existing, task_data
    from pizoo.train import device_for, fit
    from pizoo.zoo import EXPERT

    out_name = name or f"{target}-pi"
    refuse_existing(zoo, out_name)
    if alpha_lr <= 0:
        raise UsageError(f"--alpha-lr must be positive, got {alpha_lr}")
    sources = choose_sources(zoo, target, with_=with_, k=k, metric=metric)
    em, manifest = load_task_model(zoo, target, device_for(cfg))
    data = task_data(zoo, target, manifest, shots)
    train_rows = em.encode(data.train.texts, data.train.pairs, data.label_ids(data.train))
    eval_rows = em.encode(data.eval.texts, data.eval.pairs, data.label_ids(data.eval))
    experts = [load_expert_part(zoo, s, em) for s, _ in sources]
    acc_target = em.accuracy(eval_rows)
    mixture = Mixture(em, experts, spec)
    with torch.no_grad():
        acc_init = em.accuracy(eval_rows, params=mixture.mixed())
    log(f"interpolating {target} with {', '.join(s for s, _ in sources)}: target alone {acc_target:.3f}, "
        f"{spec.init} mixture before tuning {acc_init:.3f}")
    result = fit(mixture, train_rows, em.collate, cfg, desc=f"interpolating {target}",
                 lr_overrides={id(mixture.alpha): alpha_lr})
    tensors = mixture.result()
    alpha = mixture.alpha_record()
    em.load_state(tensors, where="interpolated expert")
    acc = em.accuracy(eval_rows)
    if not result.is_main_process:
        return None
    log(f"{out_name}: accuracy {acc:.3f} (target alone {acc_target:.3f}) after {result.steps} steps")
    files = {EXPERT: lambda p: save_tensors(tensors, p)}
    if embed:
        files.update(embedding_writer(em, train_rows, seed=cfg.seed))
    record = {"target": target, "sources": [{"task": s, "similarity": sim} for s, sim in sources],
              "alpha": alpha, "mode": spec.mode, "granularity": spec.granularity, "init": spec.init,
              "metric": metric, "steps": result.steps, "alpha_lr": alpha_lr}
    metrics = {"accuracy": acc, "accuracy_target": acc_target, f"accuracy_{spec.init}_mixture": acc_init,
               "n_train": len(train_rows), "n_eval": len(eval_rows), "steps": result.steps,
               "loss_first": result.first_loss, "loss_last": result.last_loss,
               "train_seconds": round(result.seconds, 2)}
    training = {**dataclasses.asdict(cfg), "max_length": em.max_length}
    out = TaskManifest(name=out_name, labels=manifest.labels, source={**data.source, "derived_from": target},
                       metrics=metrics,
                       provenance=provenance(zoo.spec, how="interpolate", training=training, interpolation=record))
    return zoo.write_task(out, files)


def zero_shot(zoo, name: str, data: str, columns, *, k: int = 1, metric: str = "cosine",
              samples: int | None = None, device: str = "cpu") -> dict:
    """A task with data but no expert: use its nearest task's expert by probe embedding (or the
    uniform mixture of the top-k) and report the accuracy on the data."""
    from pizoo.embed import rank_by_probe
    from pizoo.errors import DataError
    from pizoo.models import load_tensors, split_head
    from pizoo.zoo import EXPERT

    em, rows, top = rank_by_probe(zoo, data, columns, k=k, metric=metric, samples=samples, device=device)
    labels = em.labels
    experts = [load_expert_part(zoo, t, em) for t, _ in top]
    state = uniform(experts)
    if zoo.spec.head == "classification":
        nearest = top[0][0]
        if tuple(zoo.manifest(nearest).labels) != labels:
            raise DataError(f"the nearest task {nearest!r} has labels {list(zoo.manifest(nearest).labels)}, the data "
                            f"has {list(labels)}: a classification head cannot transfer across label sets",
                            "use a causal-lm zoo (one output space), or train the task: pizoo add-task")
        _, head = split_head(load_tensors(zoo.file(nearest, EXPERT)))
        state.update(head)
    em.load_state(state, where="zero-shot expert")
    return {"task": name, "data": str(data), "k": k, "metric": metric,
            "sources": [{"task": t, "similarity": s} for t, s in top], "accuracy": em.accuracy(rows), "n": len(rows)}


def curve(zoo, target: str, other: str, points: int = 21, device: str = "cpu") -> list[dict]:
    """Accuracy on the target's eval split along (1-t)·φ_target + t·φ_other (paper, Fig. 3a)."""
    from pizoo.render import steps_progress
    from pizoo.tasks import load_task_model, task_data

    if points < 2:
        raise UsageError(f"--points must be at least 2, got {points}")
    if other == target:
        raise UsageError("--with names the target itself")
    em, manifest = load_task_model(zoo, target, device)
    zoo.manifest(other)
    a = {n: p.detach().clone() for n, p in em.expert.items()}
    b = {n: t.to(em.device) for n, t in load_expert_part(zoo, other, em).items()}
    td = task_data(zoo, target, manifest)
    rows = em.encode(td.eval.texts, td.eval.pairs, td.label_ids(td.eval))
    out = []
    with steps_progress(f"curve {target} → {other}", points) as advance:
        for i in range(points):
            t = i / (points - 1)
            out.append({"t": round(t, 6), "accuracy": em.accuracy(rows, params=lerp(a, b, t))})
            advance()
    return out
