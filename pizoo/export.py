"""Leave pizoo with an artifact the ecosystem loads without pizoo installed.

peft    adapter_config.json + adapter_model.safetensors for PeftModel.from_pretrained (lora, prompt),
        written by peft itself from the expert as stored. An interpolated LoRA is exported exactly:
        the mixture mixed B and A separately, so the exported tensors are that mixed B and A.
merged  a transformers model folder with the expert folded into the base weights where that is
        exact: LoRA (W + scale·B·A, peft's merge) and AdaLink (E + E·W_downᵀ·W_upᵀ on the embedding
        rows). Bottleneck adapters sit behind a ReLU and prompts add positions: neither folds.
Both carry a README.md model card and pizoo_provenance.json."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from pizoo import __version__
from pizoo.basemodel import is_alias
from pizoo.errors import ExportError, UsageError
from pizoo.heads import get_head
from pizoo.results import Export
from pizoo.zoo import Zoo, replace_dir

if TYPE_CHECKING:  # annotations only: export's checks run without torch
    from pizoo.models import ExpertModel

FORMATS = ("peft", "merged")
PROVENANCE = "pizoo_provenance.json"


def _check_format(kind, fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "peft" and kind.peft_type is None:
        hint = "pizoo export NAME --out DIR --format merged" if kind.foldable else None
        raise ExportError(f"peft has no adapter format for {kind.name!r} experts"
                          + (": export a merged model instead" if kind.foldable else
                             "; bottleneck adapters sit behind a non-linearity and cannot be merged either"
                             " — use the expert inside pizoo, or build the zoo with --kind lora or adalink"),
                          hint)
    if fmt == "merged" and not kind.foldable:
        raise ExportError(f"cannot merge a {kind.name!r} expert: {kind.unmergeable}",
                          "pizoo export NAME --out DIR --format peft" if kind.peft_type else None)


def _check_out(zoo: Zoo, out: Path) -> None:
    """An export lands outside the zoo: never the zoo itself, a folder in it, or a folder holding it."""
    root, target = zoo.root.resolve(), out.resolve()
    if target == root or root in target.parents or target in root.parents:
        where = ("is the zoo" if target == root else "is inside the zoo" if root in target.parents
                 else "contains the zoo")
        raise ExportError(f"--out {out} {where} ({zoo.root}): an export is written outside the zoo",
                          "choose an --out folder outside the zoo")


# what exports written before provenance listed their files hold (peft and merged folders)
_EXPORT_NAMES = {PROVENANCE, "README.md", "adapter_config.json", "adapter_model.safetensors", "config.json",
                 "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model",
                 "tokenizer.model", "added_tokens.json", "preprocessor_config.json", "processor_config.json",
                 "chat_template.jinja"}


def export_files(out: Path) -> set[str]:
    """The files the export in `out` wrote: as its provenance lists them (older exports: the names
    an export writes)."""
    try:
        listed = json.loads((out / PROVENANCE).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        listed = None
    if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
        return set(listed)
    return _EXPORT_NAMES


def card(manifest, spec, fmt: str, out: Path, base: Path) -> str:
    """The model card; `base` is the base model's folder (what the load snippet names when the zoo
    names its base by an alias: pizoo:minilm, pizoo:multimodal)."""
    m, prov = manifest, manifest.provenance
    base_name = str(base) if is_alias(spec.base_model) else spec.base_model
    lines = [f"# {m.name}", "",
             f"A **{spec.kind}** expert for the task `{m.name}`, exported by pizoo {__version__} as "
             f"`{fmt}`.", "",
             "| | |", "| --- | --- |",
             f"| base model | `{spec.base_model}` (fingerprint `{spec.fingerprint}`) |",
             f"| head | {spec.head} |",
             f"| expert | {spec.kind} {json.dumps(spec.options, sort_keys=True)} |",
             f"| labels (head index order) | {', '.join(m.labels)} |"]
    for key, value in m.metrics.items():
        if isinstance(value, float):
            lines.append(f"| {key} | {value:.4f} |")
    src = m.source
    if src.get("data") or src.get("dataset"):
        lines.append(f"| data | `{src.get('data') or src.get('dataset')}` (seed {src.get('seed')}, "
                     f"shots {src.get('shots')}) |")
    if prov.get("interpolation"):
        lines += _interpolation_section(prov["interpolation"])
    lines += ["", "## Load it", "", "```python", *_load_snippet(spec, fmt, out, base, base_name, len(m.labels)), "```"]
    head = get_head(spec.head)
    lines += ["", f"Head `{spec.head}`: {head.summary}; options {json.dumps(spec.head_options, sort_keys=True)}."]
    if not head.per_task:
        lines += ["The label texts, in the order pizoo scores them: "
                  + ", ".join(f"`{label}`" for label in m.labels) + "."]
    lines += ["", f"Machine-readable provenance: `{PROVENANCE}`.", ""]
    return "\n".join(lines)


def _interpolation_section(inter: dict) -> list[str]:
    """The card's π-Tuning section: the sources, the mixture weights and the command that redoes it."""
    lines = ["", "## Interpolation (π-Tuning)", "",
             f"Target `{inter['target']}` mixed with its sources by softmax(α), mode `{inter['mode']}`, "
             f"granularity `{inter['granularity']}`, init `{inter['init']}`, {inter['steps']} steps.", "",
             "| source | similarity |", "| --- | --- |"]
    lines += [f"| {s['task']} | {s['similarity'] if s['similarity'] is None else round(s['similarity'], 4)} |"
              for s in inter["sources"]]
    lines += ["", "softmax(α), target first then the sources in the order above:", ""]
    lines += [f"- `{site}`: {', '.join(f'{x:.4f}' for x in w)}" for site, w in inter["alpha"].items()]
    return lines + ["", f"Reproduce: `pizoo interpolate --target {inter['target']} --with "
                        f"{','.join(s['task'] for s in inter['sources'])} --mode {inter['mode']} "
                        f"--granularity {inter['granularity']} --init {inter['init']} --steps {inter['steps']}`"]


def _load_snippet(spec, fmt: str, out: Path, base: Path, base_name: str, n_labels: int) -> list[str]:
    """The Python lines that load the export with transformers (and peft) alone."""
    from pizoo.experts import get_kind

    head = get_head(spec.head)
    config = json.loads((base / "config.json").read_text())
    auto = head.auto_class_for(config)
    if fmt != "peft":
        return [f"from transformers import {auto}", "", f"model = {auto}.from_pretrained({str(out)!r})"]
    extra = f", num_labels={n_labels}" if head.per_task else ""
    sub = get_kind(spec.kind).peft_module(config)
    lines = [f"from transformers import {auto}", "from peft import PeftModel", "",
             f"base = {auto}.from_pretrained({base_name!r}{extra})",
             f"model = PeftModel.from_pretrained(base{'.' + sub if sub else ''}, {str(out)!r})"]
    return lines + ([f"# the adapter runs on base.{sub} only; the rest of the model is used as it is"] if sub else [])


def export_task(zoo: Zoo, name: str, out: str | Path, *, fmt: str = "peft", force: bool = False) -> Export:
    """Write task `name` to folder `out` atomically; refuse a non-empty `out` unless `force`."""
    from pizoo.experts import get_kind
    from pizoo.models import quiet_transformers, resolve_base
    from pizoo.tasks import load_task_model

    spec = zoo.spec
    kind = get_kind(spec.kind)
    _check_format(kind, fmt)
    out = Path(out)
    _check_out(zoo, out)
    _check_replaceable(out, force)
    em, manifest = load_task_model(zoo, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with quiet_transformers():
            _write_model(em, manifest, spec, fmt, tmp)
        provenance = {"pizoo_version": __version__, "task": name, "format": fmt, "labels": list(manifest.labels),
                      "base_model": spec.base_model, "base_fingerprint": spec.fingerprint, "head": spec.head,
                      "head_options": spec.head_options,
                      "kind": spec.kind, "options": spec.options, "metrics": manifest.metrics,
                      "source": manifest.source, "provenance": manifest.provenance,
                      "expert_sha256": Zoo.sha(manifest, "expert")}
        (tmp / "README.md").write_text(card(manifest, spec, fmt, out, resolve_base(spec.base_model)))
        provenance["files"] = sorted([p.name for p in tmp.iterdir()] + [PROVENANCE])
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
        replace_dir(tmp, out, out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Export(name, fmt, str(out), sorted(p.name for p in out.iterdir()))


def _check_replaceable(out: Path, force: bool) -> None:
    """`out` is a folder that is new, empty, or (with force) an earlier export and nothing else."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder", "choose another --out")
    if not (out.is_dir() and any(out.iterdir())):
        return
    if not force:
        raise ExportError(f"{out} exists and is not empty", "choose another --out, or add --force to replace it")
    if not (out / PROVENANCE).is_file():  # --force replaces an earlier export, nothing else
        raise ExportError(f"{out} is not a pizoo export (no {PROVENANCE}): --force only replaces an earlier "
                          "export", "choose another --out")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in export_files(out))
    if foreign:  # a user's own file beside an export: replacing the folder would delete it
        raise ExportError(f"{out} holds files an export did not write ({', '.join(foreign[:5])}): --force "
                          "replaces an earlier export only when nothing else is in its folder",
                          f"move them out of {out}, or choose another --out")


def _write_model(em: ExpertModel, manifest, spec, fmt: str, folder: Path) -> None:
    """The expert as a PEFT adapter, or merged into a whole model with its tokenizer and processor."""
    if fmt == "peft":
        em.kind.save_peft(em, folder)
        return
    model = em.kind.merge(em)
    if get_head(spec.head).per_task:
        model.config.id2label = dict(enumerate(manifest.labels))
        model.config.label2id = {label: i for i, label in enumerate(manifest.labels)}
    model.save_pretrained(str(folder))
    if em.tokenizer is not None:
        em.tokenizer.save_pretrained(str(folder))
    if em.image_processor is not None:
        em.image_processor.save_pretrained(str(folder))
