"""HyperPELT: one hypernetwork that generates every task's expert from its task embedding.

For each task τ a task embedding z_τ; for each layer i a layer embedding l_i; for each kind of
expert tensor j (a LoRA query A, an adapter's up projection, ...) a block-type embedding b_j. A
task projector (two linear layers with a ReLU) maps [z_τ, l_i, b_j] to a hyper-embedding I, and one
linear hypernetwork per block type maps I to that tensor (Zhang et al., HyperPELT). The generated
tensor is the zoo's shared initial expert plus that output, so an untrained hypernetwork generates
the expert every task starts from, and what it generates is an ordinary expert of the zoo's kind.
The insertion sites are the kind's (a zoo holds one kind, so that every generated expert is an
ordinary expert of it: an adapter zoo's hypernetwork generates bottleneck adapters, a prompt zoo's
the prompt rows, the paper's prefix); `sites` (regexes over the kind's site names) narrows which it
generates, and the others stay the shared initial expert (for LoRA and adapters: adding nothing).

The visual side (VL-HyperPELT), on a dual encoder whose image tower carries expert tensors: a task's
image features (the mean of the image tower's projected features over its images, none for a text
task), projected to z's size and added to z, feed a second projector whose hyper-embeddings the
image tower's tensors are generated from. A new image task brings its image features with it.

What pizoo adds: z_τ = P·s_τ + o_τ, where s_τ is the sketch of the task's probe Fisher embedding
(a data-only fingerprint every task has, and any new data set gets) and o_τ a learned per-task
offset, left out on half of the training batches so that P·s alone must work. A task that has data
but no expert gets an expert generated from its probe alone, before any training; few-shot tuning
starts from there (the task embedding only, or everything).

The hypernetwork lives in <zoo>/_hyper/ (hyper.safetensors + hyper.json, written atomically under
the zoo's lock; hyper.json records the weights' sha256, which verify checks)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from pizoo.errors import CorruptFile, IncompatibleExperts, UsageError
from pizoo.experts import get_kind
from pizoo.results import HyperTraining

if TYPE_CHECKING:  # annotations only: importing the model layer here would load torch
    from pizoo.models import ExpertModel

HYPER_DIR = "_hyper"
WEIGHTS = "hyper.safetensors"
RECORD = "hyper.json"
TUNES = ("none", "task-embedding", "all")
ALL_LR_SHARE = 0.1  # --tune all: the hypernetwork's learning rate as a share of z's
OFFSET_DROPOUT = 0.5  # share of training batches whose z comes from the probe sketch alone
_LAYER = re.compile(r"\.(\d+)\.")


def block_of(name: str) -> tuple[str, int]:
    """(block type, layer) of an expert tensor: 'x.layer.3.attn.lora_A' -> ('x.layer.*.attn.lora_A', 3)."""
    m = _LAYER.search(name)
    if not m:
        return name, 0
    return name[: m.start()] + ".*." + name[m.end():], int(m.group(1))


@dataclass(frozen=True)
class HyperSpec:
    """The sizes of the hypernetwork and the tasks it was trained on (in order: offset rows)."""
    tasks: tuple[str, ...]
    z_dim: int = 32
    layer_dim: int = 8
    block_dim: int = 8
    hidden: int = 32
    seed: int = 0
    sites: tuple[str, ...] = ()  # regexes over the kind's insertion sites to generate; () = every site
    visual_dim: int = 0  # size of the image features of the visual side (0: no visual side)

    def __post_init__(self):
        for f in ("z_dim", "layer_dim", "block_dim", "hidden"):
            if getattr(self, f) < 1:
                raise UsageError(f"--{f.replace('_', '-')} must be at least 1, got {getattr(self, f)}")


def _first_of_each_block(names: list[str], init: dict[str, torch.Tensor], blocks: dict) -> dict[str, int]:
    """The first generated tensor of each block type; a block type must have one shape across layers."""
    first: dict[str, int] = {}
    for j, (b, _) in blocks.items():
        first.setdefault(b, j)
        if init[names[j]].shape != init[names[first[b]]].shape:
            raise IncompatibleExperts(f"expert tensors {b} differ in shape across layers: "
                                      f"{tuple(init[names[j]].shape)}, {tuple(init[names[first[b]]].shape)}")
    return first


class HyperNet(nn.Module):
    """[z, l_i, b_j] -> projector -> I -> per-block-type linear map -> the tensor's offset from the
    zoo's initial expert."""

    def __init__(self, spec: HyperSpec, init: dict[str, torch.Tensor], sketch_dim: int, site_of=None):
        super().__init__()
        self.spec, self.names = spec, list(init)
        # the tensors it generates: those at the chosen insertion sites (the rest stay the zoo's
        # initial expert: for LoRA and adapters, a site that adds nothing)
        self.generated = [j for j, n in enumerate(self.names) if _at_sites(spec.sites, site_of, n)]
        blocks = {j: block_of(self.names[j]) for j in self.generated}
        self.block_types = list(dict.fromkeys(b for b, _ in blocks.values()))
        layers = sorted({i for _, i in blocks.values()})
        self.register_buffer("block_index", torch.tensor([self.block_types.index(b) for b, _ in blocks.values()]))
        self.register_buffer("layer_index", torch.tensor([layers.index(i) for _, i in blocks.values()]))
        first = _first_of_each_block(self.names, init, blocks)
        gen = torch.Generator().manual_seed(spec.seed)
        self.project_task = nn.Linear(sketch_dim, spec.z_dim)
        self.task_offset = nn.Parameter(torch.zeros(len(spec.tasks), spec.z_dim))
        self.layer_emb = nn.Parameter(torch.randn(len(layers), spec.layer_dim, generator=gen) * 0.1)
        self.block_emb = nn.Parameter(torch.randn(len(self.block_types), spec.block_dim, generator=gen) * 0.1)
        self.projector = nn.Sequential(nn.Linear(spec.z_dim + spec.layer_dim + spec.block_dim, spec.hidden),
                                       nn.ReLU(), nn.Linear(spec.hidden, spec.hidden))
        # the visual side (VL-HyperPELT): a task's image features, projected to z's size, join z in a
        # second projector that makes the hyper-embeddings of the image tower's tensors
        visual = [row for row, j in enumerate(self.generated) if is_visual(self.names[j])] if spec.visual_dim else []
        self.register_buffer("visual_rows", torch.tensor(visual, dtype=torch.long), persistent=False)
        if visual:
            self.project_visual = nn.Linear(spec.visual_dim, spec.z_dim)
            self.visual_projector = nn.Sequential(
                nn.Linear(spec.z_dim + spec.layer_dim + spec.block_dim, spec.hidden), nn.ReLU(),
                nn.Linear(spec.hidden, spec.hidden))
        self.generators = nn.ModuleList(nn.Linear(spec.hidden, init[self.names[first[b]]].numel())
                                        for b in self.block_types)
        with torch.no_grad():
            for g in self.generators:  # start at the initial expert exactly
                g.weight.zero_()
                g.bias.zero_()
        for j, name in enumerate(self.names):
            self.register_buffer(f"init_{j}", init[name].detach().clone().float())

    def z(self, sketch: torch.Tensor, task: int | None = None) -> torch.Tensor:
        z = self.project_task(sketch)
        return z + self.task_offset[task] if task is not None else z

    def generate(self, z: torch.Tensor, visual: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The expert of a task with embedding z (and, with a visual side, the task's image
        features; None or zeros for a task without images)."""
        n = len(self.generated)
        where = torch.cat([self.layer_emb[self.layer_index], self.block_emb[self.block_index]], 1)
        hyper = self.projector(torch.cat([z.expand(n, -1), where], 1))
        if len(self.visual_rows):
            v = visual if visual is not None else torch.zeros(self.spec.visual_dim, device=z.device)
            zv = (z + self.project_visual(v)).expand(len(self.visual_rows), -1)
            seen = self.visual_projector(torch.cat([zv, where[self.visual_rows]], 1))
            hyper = hyper.index_copy(0, self.visual_rows, seen)
        out = {name: getattr(self, f"init_{j}") for j, name in enumerate(self.names)}
        for row, j in enumerate(self.generated):
            base = getattr(self, f"init_{j}")
            out[self.names[j]] = base + self.generators[int(self.block_index[row])](hyper[row]).view_as(base)
        return out

    def trained_parameters(self) -> int:
        """What training learns (the initial expert it adds to is a fixed buffer)."""
        return sum(p.numel() for p in self.parameters())


def is_visual(name: str) -> bool:
    """An expert tensor of a dual encoder's image tower (or its projection, or AdaLink's patch adapter)."""
    return "vision_model." in name or "visual_projection" in name or "patch_embedding" in name


def visual_feature(em: ExpertModel, rows: Sequence[dict], limit: int = 64, batch_size: int = 16) -> torch.Tensor | None:
    """A task's image features for the visual side: the mean of the image tower's (projected) features
    over up to `limit` of its images, scaled to entries of about 1; None for a task without images."""
    from pizoo.heads.base import pad, to_device

    images = [{"image": r["image"]} for r in rows if "image" in r][:limit]
    if not images:
        return None
    with torch.no_grad():
        feats = torch.cat([em.head_type.embed(em, to_device(pad(em, images[i: i + batch_size]), em.device), None)
                           for i in range(0, len(images), batch_size)])
    mean = nn.functional.normalize(feats.float().mean(0), dim=0)
    return mean * math.sqrt(mean.numel())


def _visual_dim(em: ExpertModel, names: Sequence[str]) -> int:
    from pizoo.basemodel import is_dual

    if not (is_dual(em.hf) and any(is_visual(n) for n in names)):
        return 0
    return int(getattr(em.hf.config, "projection_dim", 0) or 0)


def _at_sites(patterns: Sequence[str], site_of, name: str) -> bool:
    return not patterns or any(re.search(p, site_of(name) if site_of else name) for p in patterns)


def check_sites(patterns: Sequence[str], site_of, names: Sequence[str]) -> None:
    """Every --sites pattern must be a regex that picks at least one of the expert's sites."""
    sites = sorted({site_of(n) for n in names})
    for p in patterns:
        try:
            re.compile(p)
        except re.error as e:
            raise UsageError(f"--sites {p!r} is not a regular expression: {e}") from e
        if not any(re.search(p, site) for site in sites):
            shown = ", ".join(sites[:6]) + (f", ... ({len(sites)} in all)" if len(sites) > 6 else "")
            raise UsageError(f"--sites {p!r} matches none of this zoo's expert sites: {shown}",
                             "pizoo hyper train --sites with a part of a site's name (e.g. attention, output, "
                             "vision_model)")


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
    from pizoo.heads import get_head

    if get_head(zoo.spec.head).per_task:
        raise IncompatibleExperts(f"HyperPELT generates experts for one shared label space; this zoo's "
                                  f"{zoo.spec.head!r} head has tensors of its own per task",
                                  "use a zoo with a shared-space head (pizoo init --head match)")


def _probe_sketch(zoo, name: str) -> torch.Tensor:
    from pizoo.index import sketches_of

    s = sketches_of(zoo.embedding_file(name)).get("probe")
    if s is None:
        from pizoo.errors import MissingEmbedding

        raise MissingEmbedding(f"task {name!r} has no probe embedding", f"pizoo embed {name}")
    return scaled(s["cosine"])


def scaled(sketch_view) -> torch.Tensor:
    """A sketch of a unit vector has entries of about 1/sqrt(width): scaled to about 1, so that P·s
    is of the size of the offsets and the layer and block embeddings beside it."""
    t = torch.as_tensor(sketch_view, dtype=torch.float32)
    return t * math.sqrt(t.numel())


def default_tasks(zoo) -> list[str]:
    """The tasks trained on data of their own (not imported, interpolated or generated)."""
    return [n for n in zoo.task_names() if zoo.manifest(n).provenance.get("how") == "train"]


def _readable(zoo, tasks: list[str], task_data) -> tuple[list[str], list, list]:
    """The tasks whose probe embedding and kept splits can be read, with both; a broken task is
    named on stderr and left out (as similar and graph do), unless fewer than two would remain."""
    from pizoo.errors import PizooError
    from pizoo.progress import log

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
    from pizoo.progress import log
    from pizoo.tasks import task_data
    from pizoo.train import device_for, fit

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
    spec = dataclasses.replace(spec, visual_dim=_visual_dim(em, [n for n in em.expert if _at_sites(spec.sites, site_of, n)]))
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


def load_hyper(zoo, device="cpu") -> tuple[HyperNet, dict, torch.Tensor]:
    """The zoo's hypernetwork, checked against its record and the zoo's expert space."""
    from pizoo.models import load_tensors

    record = zoo.read_internal(HYPER_DIR, RECORD)
    if record is None:
        from pizoo.errors import PizooError

        raise PizooError(f"{zoo.root} has no hypernetwork", "pizoo hyper train")
    if record.get("expert_space") != json.loads(json.dumps(zoo.spec.expert_space)):
        raise IncompatibleExperts("the zoo's hypernetwork was trained for another expert space", "pizoo hyper train")
    state = load_tensors(zoo.root / HYPER_DIR / WEIGHTS)
    spec = HyperSpec(**{**record["spec"], "tasks": tuple(record["spec"]["tasks"]),
                        "sites": tuple(record["spec"].get("sites", ()))})
    init = {name: state[f"init_{j}"] for j, name in enumerate(record["names"]) if f"init_{j}" in state}
    if len(init) != len(record["names"]):
        raise CorruptFile(f"{zoo.root / HYPER_DIR / WEIGHTS} lacks initial expert tensors", "pizoo hyper train")
    net = HyperNet(spec, init, record["sketch_dim"], get_kind(zoo.spec.kind).site)
    sketches = state.pop("task_sketches", None)
    net.task_visuals = state.pop("task_visuals", torch.zeros(len(spec.tasks), spec.visual_dim))  # per task, in order
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise CorruptFile(f"{zoo.root / HYPER_DIR / WEIGHTS} does not fit its record: {str(e)[:200]}",
                          "pizoo hyper train") from e
    return net.to(device), record, sketches


def generate_task(zoo, name: str, data_args, cfg, *, tune: str = "task-embedding", max_length: int = 128,
                  fisher_samples: int | None = None):
    """A new task whose expert the hypernetwork generates from the data's probe embedding, tuned
    on its training split (`tune`: none, task-embedding, all); saved as an ordinary task."""
    from pizoo.config import TaskManifest
    from pizoo.fisher import embedding_writer
    from pizoo.models import ExpertModel, save_tensors
    from pizoo.tasks import check_max_length, data_fingerprints, provenance, refuse_existing, split_writers
    from pizoo.train import device_for
    from pizoo.zoo import TaskFiles

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
    from pizoo.fisher import choose, probe_fisher
    from pizoo.index import sketch
    from pizoo.train import fit

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


def show(zoo) -> dict:
    """What `hyper show` prints: the tasks, the sizes and the parameter counts (read from the record)."""
    from pizoo.errors import PizooError

    record = zoo.read_internal(HYPER_DIR, RECORD)
    if record is None:
        raise PizooError(f"{zoo.root} has no hypernetwork", "pizoo hyper train")
    p = record["parameters"]
    return {"tasks": ", ".join(record["spec"]["tasks"]), "kind": record["kind"],
            "sites": ", ".join(record["spec"].get("sites") or ()) or "every site of the kind",
            "visual side": (f"image features of size {record['spec']['visual_dim']}"
                            if record["spec"].get("visual_dim") else "none"),
            "hypernetwork parameters": p["hypernetwork"], "one expert": p["one_expert"],
            f"one expert per task (x{len(record['spec']['tasks'])})": p["experts_of_these_tasks"],
            "hypernetwork / experts": round(p["hypernetwork"] / p["experts_of_these_tasks"], 4),
            "tasks it pays off at": -(-p["hypernetwork"] // p["one_expert"]),
            "steps": record["steps"], "accuracy": record["accuracy"]}
