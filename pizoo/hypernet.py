"""HyperPELT's network: one hypernetwork that generates every task's expert from its task embedding,
and where it lives in the zoo (training and generation: pizoo.hyper).

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

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from pizoo.basemodel import is_dual
from pizoo.errors import CorruptFile, IncompatibleExperts, PizooError, UsageError
from pizoo.experts import get_kind
from pizoo.heads.base import pad, to_device

if TYPE_CHECKING:  # annotations only: the model layer would add transformers and peft here
    from pizoo.models import ExpertModel

HYPER_DIR = "_hyper"
WEIGHTS = "hyper.safetensors"
RECORD = "hyper.json"
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
        self.generated = [j for j, n in enumerate(self.names) if at_sites(spec.sites, site_of, n)]
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
    images = [{"image": r["image"]} for r in rows if "image" in r][:limit]
    if not images:
        return None
    with torch.no_grad():
        feats = torch.cat([em.head_type.embed(em, to_device(pad(em, images[i: i + batch_size]), em.device), None)
                           for i in range(0, len(images), batch_size)])
    mean = nn.functional.normalize(feats.float().mean(0), dim=0)
    return mean * math.sqrt(mean.numel())


def visual_width(em: ExpertModel, names: Sequence[str]) -> int:
    if not (is_dual(em.hf) and any(is_visual(n) for n in names)):
        return 0
    return int(getattr(em.hf.config, "projection_dim", 0) or 0)


def at_sites(patterns: Sequence[str], site_of, name: str) -> bool:
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


def scaled(sketch_view) -> torch.Tensor:
    """A sketch of a unit vector has entries of about 1/sqrt(width): scaled to about 1, so that P·s
    is of the size of the offsets and the layer and block embeddings beside it."""
    t = torch.as_tensor(sketch_view, dtype=torch.float32)
    return t * math.sqrt(t.numel())


def load_hyper(zoo, device="cpu") -> tuple[HyperNet, dict, torch.Tensor]:
    """The zoo's hypernetwork, checked against its record and the zoo's expert space."""
    from pizoo.models import load_tensors

    zoo.spec  # a folder that is not a zoo: say that, not that it lacks a hypernetwork
    record = zoo.read_internal(HYPER_DIR, RECORD)
    if record is None:
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


def show(zoo) -> dict:
    """What `hyper show` prints: the tasks, the sizes and the parameter counts (read from the record)."""
    zoo.spec  # a folder that is not a zoo: say that, not that it lacks a hypernetwork
    record = zoo.read_internal(HYPER_DIR, RECORD)
    if record is None:
        raise PizooError(f"{zoo.root} has no hypernetwork", "pizoo hyper train")
    p = record["parameters"]
    return {"tasks": ", ".join(record["spec"]["tasks"]), "kind": record["kind"],
            "sites": ", ".join(record["spec"].get("sites") or ()) or "every site of the kind",
            "visual side": (f"image features of size {record['spec']['visual_dim']}"
                            if record["spec"].get("visual_dim") else "none"),
            "hypernetwork parameters": p["hypernetwork"], "one expert": p["one_expert"],
            "one expert per task, all tasks": p["experts_of_these_tasks"],
            "hypernetwork / experts": round(p["hypernetwork"] / p["experts_of_these_tasks"], 4),
            "tasks it pays off at": -(-p["hypernetwork"] // p["one_expert"]),
            "steps": record["steps"], "accuracy": record["accuracy"]}
