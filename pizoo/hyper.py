"""HyperPELT's operations: train the hypernetwork (pizoo.hypernet) over the zoo's tasks, and
generate a new task's expert from its data's probe embedding, tuned on its shots."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from pizoo.config import TaskManifest
from pizoo.errors import IncompatibleExperts, MissingEmbedding, PizooError, UsageError
from pizoo.experts import get_kind
from pizoo.fisher import choose, embedding_writer, probe_fisher
from pizoo.heads import get_head
from pizoo.hypernet import (
    HYPER_DIR,
    RECORD,
    WEIGHTS,
    HyperNet,
    HyperSpec,
    at_sites,
    check_sites,
    load_hyper,
    scaled,
    visual_feature,
    visual_width,
)
from pizoo.index import sketch, sketches_of
from pizoo.progress import log
from pizoo.results import HyperTraining
from pizoo.train import device_for, fit
from pizoo.zoo import TaskFiles

if TYPE_CHECKING:  # annotations only: the model layer would add transformers and peft here
    from pizoo.models import ExpertModel

TUNES = ("none", "task-embedding", "all")
ALL_LR_SHARE = 0.1  # --tune all: the hypernetwork's learning rate as a share of z's
OFFSET_DROPOUT = 0.5  # share of training batches whose z comes from the probe sketch alone


class _MultiTask(nn.Module):
    """The multi-task objective: each batch is one task's, scored with that task's generated expert.

    On a share of the batches (OFFSET_DROPOUT) the task's offset is left out and z comes from its
    probe sketch alone: that is the z a new task gets, so the projection P must carry what tells
    tasks apart instead of leaving it all to the per-task offsets."""

    def __init__(self, em: ExpertModel, net: HyperNet, sketches: torch.Tensor, visuals: torch.Tensor, seed: int):
        super().__init__()
        self.em, self.net, self.model = em, net, em.wrapped
        self.register_buffer("sketches", sketches)
        self.register_buffer("visuals", visuals)
        self.coin = torch.Generator().manual_seed(seed)

    def forward(self, batch):
        t = int(batch["task"])
        alone = self.training and float(torch.rand((), generator=self.coin)) < OFFSET_DROPOUT
        params = self.net.generate(self.net.z(self.sketches[t], None if alone else t), self.visuals[t])
        return -self.em.log_probs({k: v for k, v in batch.items() if k != "task"}, params).mean()


class _Tune(nn.Module):
    """Few-shot tuning of a generated expert: the task embedding z alone, or z and the hypernetwork."""

    def __init__(self, em: ExpertModel, net: HyperNet, z: torch.Tensor, visual: torch.Tensor | None, tune: str):
        super().__init__()
        self.em, self.net, self.model, self.visual = em, net, em.wrapped, visual
        self.z = nn.Parameter(z.detach().clone())
        for p in net.parameters():
            p.requires_grad_(tune == "all")

    def forward(self, batch):
        return -self.em.log_probs(batch, self.net.generate(self.z, self.visual)).mean()


def _check_head(zoo) -> None:
    if get_head(zoo.spec.head).per_task:
        raise IncompatibleExperts(f"HyperPELT generates experts for one shared label space; this zoo's "
                                  f"{zoo.spec.head!r} head has tensors of its own per task",
                                  "use a zoo with a shared-space head (pizoo init --head match)")


def _probe_sketch(zoo, name: str) -> torch.Tensor:
    s = sketches_of(zoo.embedding_file(name)).get("probe")
    if s is None:
        raise MissingEmbedding(f"task {name!r} has no probe embedding", f"pizoo embed {name}")
    return scaled(s["cosine"])


def default_tasks(zoo) -> list[str]:
    """The tasks trained on data of their own (not imported, interpolated or generated)."""
    return [n for n in zoo.task_names() if zoo.manifest(n).provenance.get("how") == "train"]


def _readable(zoo, tasks: list[str], task_data) -> tuple[list[str], list, list]:
    """The tasks whose probe embedding and kept splits can be read, with both; a broken task is
    named on stderr and left out (as similar and graph do), unless fewer than two would remain."""
    kept, sketches, datas, skipped = [], [], [], []
    for t in tasks:
        try:
            sketch, data = _probe_sketch(zoo, t), task_data(zoo, t)
        except PizooError as e:
            skipped.append(f"{t} ({e.message})")
            continue
        kept.append(t)
        sketches.append(sketch)
        datas.append(data)
    if skipped:
        log.warning("skipped tasks that could not be read: " + "; ".join(skipped) + " — pizoo verify names the damage")
    if len(kept) < 2:
        raise UsageError(f"a hypernetwork is trained over several tasks; {len(kept)} of {len(tasks)} could be read",
                         "pizoo verify")
    return kept, sketches, datas


def train_hyper(zoo, cfg, *, tasks: Sequence[str] | None = None, spec: HyperSpec | None = None,
                max_length: int = 128) -> HyperTraining | None:
    """Train the hypernetwork over the zoo's tasks on the splits the zoo keeps; store it in _hyper/."""
    from pizoo.models import ExpertModel, save_tensors
    from pizoo.tasks import task_data

    _check_head(zoo)
    zoo.check_writable()
    tasks = list(tasks or default_tasks(zoo))
    if len(tasks) < 2:
        raise UsageError(f"a hypernetwork is trained over several tasks; {len(tasks)} given",
                         "add tasks (pizoo add-task) or name them: --tasks A,B,...")
    if len(set(tasks)) != len(tasks):
        raise UsageError(f"--tasks names a task twice: {','.join(tasks)}")
    tasks, sketches, datas = _readable(zoo, tasks, task_data)
    spec = dataclasses.replace(spec or HyperSpec(()), tasks=tuple(tasks))
    site_of = get_kind(zoo.spec.kind).site
    sketches = torch.stack(sketches)
    em = ExpertModel(zoo.spec, datas[0].labels, device=device_for(cfg), max_length=max_length)
    for p in em.expert.values():
        p.requires_grad_(False)
    check_sites(spec.sites, site_of, list(em.expert))
    spec = dataclasses.replace(spec, visual_dim=visual_width(em, [n for n in em.expert if at_sites(spec.sites, site_of, n)]))
    visuals, batches = _task_batches(em, datas, spec.visual_dim, cfg)
    net = HyperNet(spec, em.state(), sketches.shape[1], site_of).to(em.device)
    result = fit(_MultiTask(em, net, sketches.to(em.device), visuals.to(em.device), cfg.seed), batches, lambda items: items[0],
                 dataclasses.replace(cfg, batch_size=1), desc=f"hyper train ({len(tasks)} tasks)")
    accuracy = _generated_accuracy(em, net, tasks, datas, sketches, visuals)
    if not result.is_main_process:
        return None
    record = _train_record(zoo, net, tasks, sketches, cfg, result, accuracy, em, max_length)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    state["task_sketches"] = sketches.cpu()
    state["task_visuals"] = visuals.cpu()
    log.info(f"hypernetwork over {len(tasks)} tasks: {result.steps} steps, mean accuracy of the generated experts "
             f"{sum(accuracy.values()) / len(accuracy):.3f}")
    zoo.write_internal(HYPER_DIR, {WEIGHTS: lambda p: save_tensors(state, p)}, RECORD, record.to_json())
    return record


def _task_batches(em: ExpertModel, datas: list, visual_dim: int, cfg) -> tuple[torch.Tensor, list[dict]]:
    """Every task's training batches (shuffled within the task, tagged with its index) and, when the
    hypernetwork has a visual side, each task's mean image feature."""
    gen = torch.Generator().manual_seed(cfg.seed)
    visuals = torch.zeros(len(datas), visual_dim)
    batches = []
    for i, td in enumerate(datas):
        with em.using_labels(td.labels):
            rows = em.encode(td.train, td.label_ids(td.train))
            v = visual_feature(em, rows) if visual_dim else None
            if v is not None:
                visuals[i] = v.cpu()
            order = torch.randperm(len(rows), generator=gen).tolist()
            for s in range(0, len(rows), cfg.batch_size):
                batches.append({**em.collate([rows[j] for j in order[s: s + cfg.batch_size]]),
                                "task": torch.tensor(i)})
    return visuals, batches


def _generated_accuracy(em: ExpertModel, net, tasks: list[str], datas: list, sketches: torch.Tensor,
                        visuals: torch.Tensor) -> dict[str, float]:
    """Each task's eval accuracy with the expert the hypernetwork generates for it."""
    accuracy = {}
    with torch.no_grad():
        for i, (t, td) in enumerate(zip(tasks, datas)):
            with em.using_labels(td.labels):
                rows = em.encode(td.eval, td.label_ids(td.eval))
                accuracy[t] = em.accuracy(rows, params=net.generate(net.z(sketches[i].to(em.device), i),
                                                                    visuals[i].to(em.device)))
    return accuracy


def _train_record(zoo, net, tasks: list[str], sketches: torch.Tensor, cfg, result, accuracy: dict, em: ExpertModel,
                  max_length: int) -> HyperTraining:
    """The record stored beside the hypernetwork's weights (hyper show reads it)."""
    from pizoo.tasks import provenance

    expert_size = sum(p.numel() for p in em.expert.values())
    splits = {t: zoo.sha(zoo.manifest(t), "train") for t in tasks}  # the data it was trained on
    return HyperTraining(
        spec=dataclasses.asdict(net.spec), sketch_dim=int(sketches.shape[1]), names=net.names, kind=zoo.spec.kind,
        provenance=provenance(zoo.spec, how="hyper-train", train_split_sha256=splits, max_length=max_length),
        expert_space=zoo.spec.expert_space, training=dataclasses.asdict(cfg), steps=result.steps,
        train_seconds=round(result.seconds, 2), loss_first=result.first_loss, loss_last=result.last_loss,
        accuracy=accuracy, parameters={"hypernetwork": net.trained_parameters(), "one_expert": expert_size,
                                       "experts_of_these_tasks": expert_size * len(tasks)})


def generate_task(zoo, name: str, data_args, cfg, *, tune: str = "task-embedding", max_length: int = 128,
                  fisher_samples: int | None = None):
    """A new task whose expert the hypernetwork generates from the data's probe embedding, tuned
    on its training split (`tune`: none, task-embedding, all); saved as an ordinary task."""
    from pizoo.models import ExpertModel, save_tensors
    from pizoo.tasks import check_max_length, data_fingerprints, provenance, refuse_existing, split_writers

    if tune not in TUNES:
        raise UsageError(f"--tune {tune!r} is not one of {', '.join(TUNES)}")
    _check_head(zoo)
    refuse_existing(zoo, name)
    check_max_length(max_length)
    net, record, _ = load_hyper(zoo)
    data = data_args.prepare()
    em = ExpertModel(zoo.spec, data.labels, device=device_for(cfg), max_length=max_length)
    if set(em.expert) != set(net.names):
        raise IncompatibleExperts("the hypernetwork generates other tensors than this zoo's experts have",
                                  "pizoo hyper train")
    net.to(em.device)
    train_rows = em.encode(data.train, data.label_ids(data.train))
    eval_rows = em.encode(data.eval, data.label_ids(data.eval))
    z, tensors, before, steps = _generate(em, net, train_rows, eval_rows, cfg, tune, fisher_samples, name)
    em.load_state(tensors, where="generated expert")
    after = em.accuracy(eval_rows)
    files = TaskFiles(expert=lambda p: save_tensors(tensors, p), **split_writers(data),
                      embedding=embedding_writer(em, train_rows, seed=cfg.seed, samples=fisher_samples))
    metrics = {"accuracy": after, "accuracy_generated": before, "n_train": len(train_rows), "n_eval": len(eval_rows),
               "steps": steps}
    hyper = {"tune": tune, "hyper_sha256": record.get("sha256", {}).get(WEIGHTS), "trained_on": list(net.spec.tasks),
             "z": [round(float(x), 6) for x in z]}
    manifest = TaskManifest(name=name, labels=data.labels,
                            source={**data.source, "sha256": data_fingerprints(data_args)},
                            metrics=metrics, provenance=provenance(zoo.spec, how="hyper", hyper=hyper,
                                                                   training={**dataclasses.asdict(cfg),
                                                                             "max_length": max_length}))
    return zoo.save_task(manifest, files)


def _generate(em: ExpertModel, net, train_rows: list[dict], eval_rows: list[dict], cfg, tune: str, fisher_samples: int | None,
              name: str) -> tuple[torch.Tensor, dict[str, torch.Tensor], float, int]:
    """The expert the hypernetwork generates from the data's probe embedding, tuned on the training
    rows: (the task code z, the expert tensors, eval accuracy before tuning, steps taken)."""
    probe = probe_fisher(em, choose(train_rows, fisher_samples, cfg.seed))
    s = scaled(sketch({n: t.numpy() for n, t in probe.items()})["cosine"]).to(em.device)
    visual = visual_feature(em, train_rows) if net.spec.visual_dim else None
    with torch.no_grad():
        z0 = net.z(s)
        before = em.accuracy(eval_rows, params=net.generate(z0, visual))
    module = _Tune(em, net, z0, visual, tune)
    steps = 0
    if tune != "none":
        for p in em.expert.values():
            p.requires_grad_(False)
        # the shared hypernetwork moves at a tenth of z's learning rate: z is 32 numbers, it is most of a model
        slow = {id(p): cfg.lr * ALL_LR_SHARE for p in net.parameters()} if tune == "all" else None
        steps = fit(module, train_rows, em.collate, cfg, desc=f"hyper generate {name} (tune {tune})",
                    lr_overrides=slow).steps
    with torch.no_grad():
        tensors = {n: t.detach().cpu() for n, t in net.generate(module.z, visual).items()}
    return module.z.detach().cpu(), tensors, before, steps
