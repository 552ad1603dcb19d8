"""Library operations on tasks: create a zoo, import or train an expert, evaluate it.

The CLI calls exactly one of these per command; scripts can import them directly."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import torch

from pizoo import __version__
from pizoo.config import TaskManifest, ZooSpec
from pizoo.data import Columns, TaskData, load_rows, prepare, read_examples
from pizoo.errors import CorruptFile, DataError, IncompatibleExperts, TaskExists, ZooExists
from pizoo.experts import get_kind
from pizoo.models import (
    ExpertModel,
    default_base_model,
    fingerprint,
    load_tensors,
    read_model_type,
    resolve_base,
    save_tensors,
)
from pizoo.render import log
from pizoo.train import ExpertLoss, TrainConfig, device_for, fit
from pizoo.zoo import EXPERT, Zoo, check_name, sha256_file

_PEFT_HEAD = re.compile(r"(?:^|\.)(?:classifier|score)\.(?:modules_to_save\.)?(?:default\.)?(.+)$")


def init_zoo(root: str | Path, *, base_model: str | None = None, head: str = "classification",
             kind: str = "lora", options: dict[str, Any] | None = None, template: str | None = None,
             seed: int = 0, trust_remote_code: bool = False) -> Zoo:
    """Create zoo.toml: the base model (with its fingerprint), the head and the expert spec."""
    zoo = Zoo(root)
    if (zoo.root / "zoo.toml").exists():
        zoo.spec  # an unreadable zoo.toml: say what is wrong with it
        raise ZooExists(f"{zoo.root} is already a zoo", "use it as is, or pick another --zoo folder")
    name = base_model or default_base_model()
    path = resolve_base(name)
    model_type = read_model_type(path)
    expert_kind = get_kind(kind)
    opts = expert_kind.normalize_options(options or {}, model_type)
    local = Path(name).expanduser()
    spec = ZooSpec(base_model=str(local.resolve()) if local.is_dir() else name, fingerprint=fingerprint(path),
                   model_type=model_type, head=head, kind=kind, options=opts, seed=seed,
                   trust_remote_code=trust_remote_code, **({"template": template} if template else {}))
    ExpertModel(spec, ("a", "b"))  # proves the spec attaches to this model before anything is written
    return Zoo.create(root, spec)


def provenance(spec: ZooSpec, **extra: Any) -> dict[str, Any]:
    return {"pizoo_version": __version__, "base_model": spec.base_model, "base_fingerprint": spec.fingerprint,
            "head": spec.head, "kind": spec.kind, "options": spec.options, **extra}


def refuse_existing(zoo: Zoo, name: str) -> None:
    check_name(name)
    if zoo.has_task(name):
        raise TaskExists(f"task {name!r} already exists in {zoo.root}",
                         f"choose another name, or pizoo rm {name} --yes first")


def import_adapter(zoo: Zoo, name: str, adapter_dir: str | Path, labels: list[str] | None = None
                   ) -> TaskManifest:
    """Import a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) as a task."""
    spec = zoo.spec
    refuse_existing(zoo, name)
    folder = Path(adapter_dir)
    config_path, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not config_path.is_file():
        raise DataError(f"{folder} is not a PEFT adapter folder (no adapter_config.json)",
                        "pass --from-adapter a folder written by PeftModel.save_pretrained")
    if not weights.is_file():
        pickled = (folder / "adapter_model.bin").is_file()
        raise DataError(f"{folder} has no adapter_model.safetensors"
                        + (" (only a pickled adapter_model.bin, which pizoo never loads)" if pickled else ""),
                        "save it with safe_serialization=True (the peft default)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise CorruptFile(f"{config_path} is not valid JSON: {e}") from e
    kind = get_kind(spec.kind)
    if kind.peft_type is None:
        raise IncompatibleExperts(f"this zoo holds {spec.kind!r} experts, which have no PEFT adapter format",
                                  "import PEFT adapters into a zoo made with --kind lora or --kind prompt")
    kind.check_peft_config(config, spec.options)
    tensors = {}
    for key, value in load_tensors(weights).items():
        m = _PEFT_HEAD.search(key)
        tensors[f"head.{m.group(1)}" if m else key] = value
    if spec.head == "classification":
        if "head.weight" not in tensors:
            raise IncompatibleExperts("the adapter has no classification head (classifier/score in modules_to_save)",
                                      "train it with task_type=SEQ_CLS, or use a causal-lm zoo")
        n = tensors["head.weight"].shape[0]
        labels = labels or [str(i) for i in range(n)]
        if len(labels) != n:
            raise DataError(f"--labels names {len(labels)} labels but the adapter's head has {n} outputs")
    else:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("head.")}
        if not labels:
            raise DataError("a causal-lm task needs its label words", "pass --labels yes,no")
    em = ExpertModel(spec, labels)
    try:
        em.load_state(tensors, where=f"adapter {folder}")
    except IncompatibleExperts as e:
        made_for = config.get("base_model_name_or_path") or "an unnamed base model"
        raise IncompatibleExperts(f"{e.message} (adapter made for {made_for}; zoo base {spec.base_model})",
                                  "import it into a zoo of the adapter's own base model") from e
    manifest = TaskManifest(
        name=name, labels=tuple(labels),
        source={"adapter": str(folder.resolve()), "adapter_sha256": sha256_file(weights),
                "base_model_name_or_path": config.get("base_model_name_or_path")},
        provenance=provenance(spec, how="import"))
    state = em.state()
    return zoo.write_task(manifest, {EXPERT: lambda p: save_tensors(state, p)})


def load_task_model(zoo: Zoo, name: str, device: str | torch.device = "cpu", max_length: int | None = None
                    ) -> tuple[ExpertModel, TaskManifest]:
    manifest = zoo.manifest(name)
    length = max_length or manifest.provenance.get("training", {}).get("max_length", 128)
    em = ExpertModel(zoo.spec, manifest.labels, device=device, max_length=length)
    em.load_state(load_tensors(zoo.file(name, EXPERT)), where=f"task {name}")
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


def _data_fingerprints(args: DataArgs) -> dict[str, str]:
    return {str(Path(p).resolve()): sha256_file(Path(p)) for p in (args.data, args.eval_data) if p}


def train_task(zoo: Zoo, name: str, args: DataArgs, cfg: TrainConfig, *, max_length: int = 128,
               embed: bool = True, fisher_samples: int | None = None) -> TaskManifest | None:
    """Train a new expert on the task's data, evaluate it, embed it, and add it to the zoo.

    Returns None on the non-main processes of a distributed launch (only one process writes)."""
    spec = zoo.spec
    refuse_existing(zoo, name)
    data = args.prepare()
    torch.manual_seed(cfg.seed)
    device = device_for(cfg)
    em = ExpertModel(spec, data.labels, device=device, max_length=max_length, head_seed=spec.seed)
    train_rows = em.encode(data.train.texts, data.train.pairs, data.label_ids(data.train))
    eval_rows = em.encode(data.eval.texts, data.eval.pairs, data.label_ids(data.eval))
    before = em.accuracy(eval_rows)
    result = fit(ExpertLoss(em), train_rows, em.collate, cfg, desc=f"training {name}")
    after = em.accuracy(eval_rows)
    if not result.is_main_process:
        return None
    log(f"{name}: accuracy {before:.3f} before training, {after:.3f} after "
        f"({result.steps} steps, {len(eval_rows)} eval examples)")
    state = em.state()
    files = {EXPERT: lambda p: save_tensors(state, p)}
    metrics = {"accuracy": after, "accuracy_before": before, "n_eval": len(eval_rows), "n_train": len(train_rows),
               "loss_first": result.first_loss, "loss_last": result.last_loss, "steps": result.steps,
               "train_seconds": round(result.seconds, 2)}
    training = {**dataclasses.asdict(cfg), "max_length": max_length}
    manifest = TaskManifest(name=name, labels=data.labels,
                            source={**data.source, "sha256": _data_fingerprints(args)},
                            metrics=metrics, provenance=provenance(spec, how="train", training=training))
    if embed:
        from pizoo.fisher import embedding_writer

        files.update(embedding_writer(em, train_rows, seed=cfg.seed, samples=fisher_samples))
    return zoo.write_task(manifest, files)


def task_data(zoo: Zoo, name: str, manifest: TaskManifest | None = None, shots: int | None = None) -> TaskData:
    """Rebuild a trained task's splits from its recorded source (same file, seed and label set);
    `shots` re-draws the training examples per class."""
    manifest = manifest or zoo.manifest(name)
    src = manifest.source
    if "columns" not in src:
        raise DataError(f"task {name!r} was imported and has no data of its own",
                        "pass --data FILE, or add the task with --data")
    for path, digest in src.get("sha256", {}).items():
        if not Path(path).is_file():
            raise DataError(f"the data of task {name!r} ({path}) is gone", "pass --data FILE")
        if sha256_file(Path(path)) != digest:
            log(f"warning: {path} changed since task {name!r} was trained; its splits may differ")
    return DataArgs.from_source(src, shots).prepare(labels=manifest.labels)


def read_labelled(path: str | Path, columns: Columns, labels: tuple[str, ...]):
    """Examples from a file, with labels checked against a task's label set."""
    ex = read_examples(load_rows(path), columns, str(path))
    td = TaskData(ex, ex, labels)
    return ex, td.label_ids(ex)


def task_columns(manifest: TaskManifest, columns: Columns | None = None) -> Columns:
    """The columns to read new data of a task with: `columns` if given (keeping the task's verbalizer
    unless it brings its own), else those the task was trained with."""
    own = Columns.from_record(manifest.source.get("columns", {}))
    if columns is None:
        return own
    return columns if columns.verbalizer else dataclasses.replace(columns, verbalizer=own.verbalizer)


def evaluate_task(zoo: Zoo, name: str, *, data: str | None = None, columns: Columns | None = None,
                  device: str = "cpu") -> dict[str, Any]:
    """Accuracy of a task's expert on its held-out split, or on a given file."""
    em, manifest = load_task_model(zoo, name, device)
    if data is not None:
        cols = task_columns(manifest, columns)
        ex, ids = read_labelled(data, cols, manifest.labels)
        where = str(Path(data).resolve())
    else:
        td = task_data(zoo, name, manifest)
        ex, ids, where = td.eval, td.label_ids(td.eval), "eval split"
    rows = em.encode(ex.texts, ex.pairs, ids)
    return {"task": name, "accuracy": em.accuracy(rows), "n": len(rows), "data": where,
            "labels": list(manifest.labels)}
