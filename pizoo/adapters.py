"""Import a PEFT adapter (adapter_config.json + adapter_model.safetensors, never a pickled .bin)
as a task of the zoo: its tensors renamed to the zoo's expert, checked against the zoo's kind and
base model."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pizoo.config import TaskManifest
from pizoo.errors import CorruptFile, DataError, IncompatibleExperts
from pizoo.experts import get_kind
from pizoo.heads import get_head
from pizoo.models import ExpertModel, fingerprint, load_tensors, save_tensors
from pizoo.progress import log
from pizoo.tasks import provenance, refuse_existing
from pizoo.zoo import TaskFiles, Zoo, sha256_file

_PEFT_HEAD = re.compile(r"(?:^|\.)(?:classifier|score)\.(?:modules_to_save\.)?(?:default\.)?(.+)$")


def _check_adapter_base(named: str | None, spec) -> bool:
    """Is the adapter's base model (adapter_config's base_model_name_or_path) the zoo's? Refused when
    it is a model folder here with another fingerprint; a name that cannot be checked is said on
    stderr. Returns whether it is known to be the same."""
    if not named:
        log.warning("warning: the adapter does not name its base model; imported as if made for this zoo's")
        return False
    if named == spec.base_model:
        return True
    path = Path(named).expanduser()
    if (path / "config.json").is_file():
        if fingerprint(path, spec.schema_version) != spec.fingerprint:
            raise IncompatibleExperts(f"the adapter was made for the model at {named}, which is not this zoo's base "
                                      f"model ({spec.base_model})", "import it into a zoo of that model: pizoo --zoo "
                                      f"DIR init --base-model {named}")
        return True
    log.warning(f"warning: the adapter names its base model {named!r}, which cannot be checked here against this "
                f"zoo's ({spec.base_model}): imported because its tensors fit")
    return False


def import_adapter(zoo: Zoo, name: str, adapter_dir: str | Path, labels: list[str] | None = None
                   ) -> TaskManifest:
    """Import a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) as a task."""
    spec = zoo.spec
    refuse_existing(zoo, name)
    folder = Path(adapter_dir)
    config, weights = _adapter_files(folder)
    kind = get_kind(spec.kind)
    if kind.peft_type is None:
        raise IncompatibleExperts(f"this zoo holds {spec.kind!r} experts, which have no PEFT adapter format",
                                  "import PEFT adapters into a zoo made with --kind lora or --kind prompt")
    kind.check_peft_config(config, spec.options)
    same_base = _check_adapter_base(config.get("base_model_name_or_path"), spec)
    tensors, labels = _adapter_tensors(load_tensors(weights), spec.head, labels)
    em = ExpertModel(spec, labels)
    tensors = _match_backbone_names(tensors, set(em.trainable()), getattr(em.hf, "base_model_prefix", ""))
    try:
        em.load_state(tensors, where=f"adapter {folder}")
    except IncompatibleExperts as e:
        made_for = config.get("base_model_name_or_path") or "an unnamed base model"
        raise IncompatibleExperts(f"{e.message} (adapter made for {made_for}; zoo base {spec.base_model})",
                                  "import it into a zoo made with the adapter's options (pizoo init --rank ...)"
                                  if same_base else "import it into a zoo of the adapter's own base model") from e
    manifest = TaskManifest(
        name=name, labels=tuple(labels),
        source={"adapter": str(folder.resolve()), "adapter_sha256": sha256_file(weights),
                "base_model_name_or_path": config.get("base_model_name_or_path")},
        provenance=provenance(spec, how="import"))
    state = em.state()
    return zoo.save_task(manifest, TaskFiles(expert=lambda p: save_tensors(state, p)))


def _adapter_files(folder: Path) -> tuple[dict, Path]:
    """A PEFT adapter folder's config and its safetensors weights file (never a pickled .bin)."""
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
        return json.loads(config_path.read_text()), weights
    except json.JSONDecodeError as e:
        raise CorruptFile(f"{config_path} is not valid JSON: {e}") from e


def _adapter_tensors(loaded: dict, head: str, labels: list[str] | None) -> tuple[dict, list[str]]:
    """The adapter's tensors renamed to the expert's (its classifier as head.*, kept only where the
    zoo's head is per-task) and the task's labels, checked against them."""
    tensors = {}
    for key, value in loaded.items():
        m = _PEFT_HEAD.search(key)
        tensors[f"head.{m.group(1)}" if m else key] = value
    if get_head(head).per_task:
        if "head.weight" not in tensors:
            raise IncompatibleExperts(f"the adapter has no task head (classifier/score in modules_to_save), which "
                                      f"this zoo's {head!r} head needs",
                                      "train it with task_type=SEQ_CLS, or import it into a shared-space zoo")
        n = tensors["head.weight"].shape[0]
        labels = labels or [str(i) for i in range(n)]
        if len(labels) != n:
            raise DataError(f"--labels names {len(labels)} labels but the adapter's head has {n} outputs")
    else:  # a shared-space head reads labels as text: a trained classifier layer has no place here
        tensors = {k: v for k, v in tensors.items() if not k.startswith("head.")}
        if not labels:
            raise DataError(f"a {head} task needs its label texts", "pass --labels negative,positive")
    if len(set(labels)) != len(labels) or len(labels) < 2:
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise DataError(f"--labels {','.join(labels)}: " + (f"names {dup[0]!r} twice" if dup else "one label only")
                        + ": a task needs two or more distinct labels", "pass --labels negative,positive")
    return tensors, labels


def _match_backbone_names(tensors: dict, want: set[str], prefix: str) -> dict:
    """An adapter trained on a model with a task head (BertForSequenceClassification) names its
    tensors under the backbone's prefix ('...model.bert.encoder...'); the bare backbone a shared-space
    head loads has no prefix ('...model.encoder...'), and the other way round. Same tensors."""
    if not prefix or set(tensors) <= want:
        return tensors
    inner, outer = "base_model.model.", f"base_model.model.{prefix}."
    out = {}
    for key, value in tensors.items():
        for cand in (key, key.replace(outer, inner, 1), key.replace(inner, outer, 1)):
            if cand in want:
                key = cand
                break
        out[key] = value
    return out
