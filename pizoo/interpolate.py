"""π-Tuning on the zoo: choose the sources of a target, learn the softmax(α) mixture of their experts
on the target's data (pizoo.mixture), and save the result as a task; the linear path between two
experts (the paper's Fig. 3a)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pizoo.errors import UsageError
from pizoo.mixture import MixSpec, Mixture, lerp


def choose_sources(zoo, target: str, *, with_: Sequence[str] | None = None, k: int = 2, metric: str = "cosine"
                   ) -> list[tuple[str, float | None]]:
    """The tasks to mix with `target`: the explicit list, or its top-k by Fisher similarity.

    Sources are distinct tasks: a task made by interpolation counts as the task it was made for
    (its root), so neither the target's own derivatives nor a second version of one source are
    offered."""
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
    roots = {n: root_of(zoo, n) for n in zoo.task_names()}
    others = embedded_tasks(zoo, "expert", exclude=tuple(n for n, r in roots.items() if r == roots[target]))
    ranked, seen = [], set()
    for name, sim in rank(target_vec, others, metric):
        if roots[name] not in seen:  # one version per root task: the most similar
            seen.add(roots[name])
            ranked.append((name, sim))
    check_k(k, len(ranked))
    return ranked[:k]


def root_of(zoo, name: str) -> str:
    """The task a task was ultimately made for: X for X-pi, X-pi-pi, ..."""
    from pizoo.errors import PizooError

    seen = {name}
    while True:
        try:
            target = zoo.manifest(name).provenance.get("interpolation", {}).get("target")
        except PizooError:  # an unreadable task is its own root; verify reports it
            return name
        if not target or target in seen or not zoo.has_task(target):
            return name
        seen.add(target)
        name = target


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
    from pizoo.progress import log
    from pizoo.tasks import (
        load_task_model,
        provenance,
        refuse_existing,
        split_writers,
        task_data,
    )
    from pizoo.train import device_for, fit
    from pizoo.zoo import EXPERT

    out_name = name or f"{target}-pi"
    refuse_existing(zoo, out_name)
    if alpha_lr <= 0:
        raise UsageError(f"--alpha-lr must be positive, got {alpha_lr}")
    sources = choose_sources(zoo, target, with_=with_, k=k, metric=metric)
    em, manifest = load_task_model(zoo, target, device_for(cfg))
    data = task_data(zoo, target, manifest, shots)
    train_rows = em.encode(data.train, data.label_ids(data.train))
    eval_rows = em.encode(data.eval, data.label_ids(data.eval))
    experts = [load_expert_part(zoo, s, em) for s, _ in sources]
    acc_target = em.accuracy(eval_rows)
    mixture = Mixture(em, experts, spec)
    with torch.no_grad():
        acc_init = em.accuracy(eval_rows, params=mixture.mixed())
    log.info(f"interpolating {target} with {', '.join(s for s, _ in sources)}: target alone {acc_target:.3f}, "
        f"{spec.init} mixture before tuning {acc_init:.3f}")
    result = fit(mixture, train_rows, em.collate, cfg, desc=f"interpolating {target}",
                 lr_overrides={id(mixture.alpha): alpha_lr})
    tensors = mixture.result()
    alpha = mixture.alpha_record()
    em.load_state(tensors, where="interpolated expert")
    acc = em.accuracy(eval_rows)
    if not result.is_main_process:
        return None
    log.info(f"{out_name}: accuracy {acc:.3f} (target alone {acc_target:.3f}) after {result.steps} steps")
    files = {EXPERT: lambda p: save_tensors(tensors, p), **split_writers(data)}
    if embed:
        files.update(embedding_writer(em, train_rows, seed=cfg.seed))
    record = {"target": target, "root": root_of(zoo, target),
              "sources": [{"task": s, "similarity": sim, "root": root_of(zoo, s)} for s, sim in sources],
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


def curve(zoo, target: str, other: str, points: int = 21, device: str = "cpu") -> list[dict]:
    """Accuracy on the target's eval split along (1-t)·φ_target + t·φ_other (paper, Fig. 3a)."""
    from pizoo import progress
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
    rows = em.encode(td.eval, td.label_ids(td.eval))
    out = []
    with progress.task(f"curve {target} → {other}", points) as advance:
        for i in range(points):
            t = i / (points - 1)
            out.append({"t": round(t, 6), "accuracy": em.accuracy(rows, params=lerp(a, b, t))})
            advance()
    return out
