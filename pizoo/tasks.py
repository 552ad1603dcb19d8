"""Library operations on tasks: create a zoo, import or train an expert, evaluate it.

The CLI calls exactly one of these per command; scripts can import them directly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from pizoo import __version__
from pizoo.basemodel import DEFAULT_ALIAS
from pizoo.choose import compare
from pizoo.config import TaskManifest, ZooSpec
from pizoo.data import (
    Columns,
    Examples,
    TaskData,
    draw_shots,
    prepare,
)
from pizoo.errors import (
    CorruptFile,
    DataError,
    IncompatibleExperts,
    NotAZoo,
    TaskExists,
    UsageError,
    ZooExists,
)
from pizoo.experts import get_kind
from pizoo.fisher import embedding_writer
from pizoo.heads import default_head, get_head
from pizoo.models import (
    ExpertModel,
    fingerprint,
    load_tensors,
    read_model_type,
    resolve_base,
    save_tensors,
    tower_types,
)
from pizoo.progress import log
from pizoo.train import ExpertLoss, TrainConfig, device_for, fit
from pizoo.zoo import TaskFiles, Zoo, check_name, sha256_file


def init_zoo(root: str | Path, *, base_model: str | None = None, head: str | None = None,
             kind: str = "lora", options: dict[str, Any] | None = None,
             head_options: dict[str, Any] | None = None, seed: int = 0, trust_remote_code: bool = False) -> Zoo:
    """Create zoo.toml: the base model (with its fingerprint), the head and the expert spec.

    `head` None picks the shared-space head that fits the model (pizoo.heads.default_head)."""
    zoo = Zoo(root)
    if zoo.root.exists() and not zoo.root.is_dir():
        raise NotAZoo(f"{zoo.root} is a file, not a folder for a zoo", "pick another --zoo folder")
    if (zoo.root / "zoo.toml").exists():
        zoo.spec  # an unreadable zoo.toml: say what is wrong with it
        raise ZooExists(f"{zoo.root} is already a zoo", "use it as is, or pick another --zoo folder")
    name = base_model or DEFAULT_ALIAS
    path = resolve_base(name)
    model_type = read_model_type(path)
    head = head or default_head(json.loads((path / "config.json").read_text()))
    head_opts = get_head(head).normalize_options(head_options or {}, path)
    opts = get_kind(kind).normalize_options(options or {}, tower_types(path))
    local = Path(name).expanduser()
    spec = ZooSpec(base_model=str(local.resolve()) if local.is_dir() else name, fingerprint=fingerprint(path),
                   model_type=model_type, head=head, head_options=head_opts, kind=kind, options=opts, seed=seed,
                   trust_remote_code=trust_remote_code)
    ExpertModel(spec, ())  # proves the spec attaches to this model before anything is written
    return Zoo.create(root, spec)


def provenance(spec: ZooSpec, **extra: Any) -> dict[str, Any]:
    return {"pizoo_version": __version__, "base_model": spec.base_model, "base_fingerprint": spec.fingerprint,
            "head": spec.head, "head_options": spec.head_options, "kind": spec.kind, "options": spec.options, **extra}


def refuse_existing(zoo: Zoo, name: str) -> None:
    """Before making a new task: a valid, free name in a zoo we can write to (checked before training)."""
    check_name(name)
    if zoo.has_task(name):
        raise TaskExists(f"task {name!r} already exists in {zoo.root}",
                         f"choose another name, or pizoo rm {name} --yes first")
    zoo.check_writable()


def load_task_model(zoo: Zoo, name: str, device: str | torch.device = "cpu", max_length: int | None = None,
                    labels: tuple[str, ...] | None = None) -> tuple[ExpertModel, TaskManifest]:
    """The task's expert on the base model. `labels` (shared-space heads only) scores another label
    set with this expert: cross-task evaluation."""
    manifest = zoo.manifest(name)
    length = max_length or manifest.provenance.get("training", {}).get("max_length", 128)
    if labels is not None and tuple(labels) != manifest.labels and get_head(zoo.spec.head).per_task:
        raise IncompatibleExperts(f"task {name!r} has a {zoo.spec.head} head over {list(manifest.labels)}; it cannot "
                                  f"score the labels {list(labels)[:6]}",
                                  "use a shared-space head (pizoo init --head match) for cross-task evaluation")
    em = ExpertModel(zoo.spec, labels or manifest.labels, device=device, max_length=length)
    em.load_state(load_tensors(zoo.expert_file(name)), where=f"task {name}")
    return em, manifest


@dataclasses.dataclass(frozen=True)
class DataArgs:
    """Where a task's data comes from and how to read it (the add-task data flags)."""

    data: str | None = None
    eval_data: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    split: str | None = None
    columns: Columns = Columns()
    shots: int | None = None
    seed: int = 0

    @classmethod
    def from_source(cls, source: dict[str, Any], shots: int | None = None) -> "DataArgs":
        """The data arguments a task was trained with, from its task.json `source` record."""
        return cls(data=source.get("data"), eval_data=source.get("eval_data"), dataset=source.get("dataset"),
                   dataset_config=source.get("dataset_config"), split=source.get("split"),
                   columns=Columns.from_record(source["columns"]), shots=shots if shots is not None else source.get("shots"),
                   seed=source.get("seed", 0))

    def prepare(self, labels: tuple[str, ...] | None = None) -> TaskData:
        return prepare(self.data, self.columns, eval_data=self.eval_data, dataset=self.dataset,
                       dataset_config=self.dataset_config, split=self.split, shots=self.shots, seed=self.seed,
                       labels=labels)


def data_fingerprints(args: DataArgs) -> dict[str, str]:
    return {str(Path(p).resolve()): sha256_file(Path(p)) for p in (args.data, args.eval_data) if p}


def train_task(zoo: Zoo, name: str, args: DataArgs, cfg: TrainConfig, *, max_length: int = 128,
               embed: bool = True, fisher_samples: int | None = None) -> TaskManifest | None:
    """Train a new expert on the task's data, evaluate it, embed it, and add it to the zoo.

    Returns None on the non-main processes of a distributed launch (only one process writes)."""
    spec = zoo.spec
    refuse_existing(zoo, name)
    check_max_length(max_length)
    if fisher_samples is not None and fisher_samples < 1:
        raise UsageError(f"--fisher-samples must be at least 1, got {fisher_samples}")
    data = args.prepare()
    torch.manual_seed(cfg.seed)
    device = device_for(cfg)
    em = ExpertModel(spec, data.labels, device=device, max_length=max_length, head_seed=spec.seed)
    train_rows = em.encode(data.train, data.label_ids(data.train))
    eval_rows = em.encode(data.eval, data.label_ids(data.eval))
    # The zoo's shared initial expert, before any training: the base model itself for the kinds that
    # start as the identity (lora, adapter, adalink). With a per-task head it is a random head.
    before = em.score(eval_rows)
    result = fit(ExpertLoss(em), train_rows, em.collate, cfg, desc=f"training {name}")
    after = em.score(eval_rows)
    if not result.is_main_process:
        return None
    log.info(f"{name}: accuracy {after.accuracy:.3f} after training; {before.accuracy:.3f} zero-shot (before training) "
             f"({result.steps} steps, {len(eval_rows)} eval examples)")
    state = em.state()
    # below_zero_shot: training left the expert worse than where it started (too few shots, a bad --lr),
    # by the paired test of pizoo.choose on the eval split: beyond noise, not every small dip.
    metrics = {"accuracy": after.accuracy, "accuracy_zero_shot": before.accuracy,
               "below_zero_shot": bool(eval_rows) and compare(after, before, strict=True) < 0,
               "n_eval": len(eval_rows), "n_train": len(train_rows), "loss_first": result.first_loss,
               "loss_last": result.last_loss, "steps": result.steps, "train_seconds": round(result.seconds, 2)}
    training = {**dataclasses.asdict(cfg), "max_length": max_length}
    manifest = TaskManifest(name=name, labels=data.labels, source={**data.source, "sha256": data_fingerprints(args)},
                            metrics=metrics, provenance=provenance(spec, how="train", training=training))
    embedding = embedding_writer(em, train_rows, seed=cfg.seed, samples=fisher_samples) if embed else None
    return zoo.save_task(manifest, TaskFiles(expert=lambda p: save_tensors(state, p), **split_writers(data),
                                             embedding=embedding))


def check_max_length(max_length: int) -> None:
    if not isinstance(max_length, int) or max_length < 4:
        raise UsageError(f"--max-length must be at least 4 tokens, got {max_length}")


def split_writers(data: TaskData) -> dict:
    """Writers of the task's train and eval splits (TaskFiles' train= and eval=)."""
    def writer(ex: Examples):
        return lambda p: (p.parent.mkdir(parents=True, exist_ok=True), ex.to_frame().to_parquet(p, index=False))

    return {"train": writer(data.train), "eval": writer(data.eval)}


def _read_split(zoo: Zoo, name: str, which: str) -> Examples:
    import pandas as pd

    path = zoo.split_file(name, which)
    try:
        return Examples.from_frame(pd.read_parquet(path), str(path))
    except (OSError, ValueError) as e:
        raise CorruptFile(f"{path} is not a readable parquet file ({e})", "pizoo verify") from e


def task_data(zoo: Zoo, name: str, manifest: TaskManifest | None = None, shots: int | None = None) -> TaskData:
    """The splits a task was trained and evaluated on, as kept in its folder; `shots` re-draws N
    training examples per class from the kept training split.

    Tasks made before the zoo kept splits (schema 1) rebuild them from their recorded source file."""
    manifest = manifest or zoo.manifest(name)
    src = manifest.source
    if zoo.has_splits(manifest):
        train, held = _read_split(zoo, name, "train"), _read_split(zoo, name, "eval")
        if shots is not None:
            train = train.subset(draw_shots(train, shots, src.get("seed", 0)))
        return TaskData(train, held, manifest.labels, {**src, "shots": shots or src.get("shots")})
    if "columns" not in src:
        raise DataError(f"task {name!r} was imported and has no data of its own",
                        "pass --data FILE, or add the task with --data")
    for path, digest in src.get("sha256", {}).items():
        if not Path(path).is_file():
            raise DataError(f"the data of task {name!r} ({path}) is gone (the task predates kept splits)",
                            "pass --data FILE, or add the task again")
        if sha256_file(Path(path)) != digest:
            log.warning(f"warning: {path} changed since task {name!r} was trained; its splits may differ")
    return DataArgs.from_source(src, shots).prepare(labels=manifest.labels)
