"""The `pizoo` command: parse, make one library call, render. Every command shows an example."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from pizoo import __version__, render
from pizoo.errors import PizooError, UsageError

app = typer.Typer(
    help="An on-disk zoo of parameter-efficient experts over one frozen base model: add tasks, embed them, "
         "rank similar tasks, interpolate experts (π-Tuning) and export them.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="rich")

ZooOpt = Annotated[Path, typer.Option("--zoo", envvar="PIZOO_ZOO", help="Zoo folder.", show_default=True)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")]
VerbalizerOpt = Annotated[Optional[str], typer.Option(
    help="Rename data labels to words, e.g. '0=negative,1=positive': the label text the head reads (default: "
         "the label value itself); escape ',' or '=' in a label with a backslash, or give a JSON file: "
         "@labels.json. Later reads of the task's data reuse it.")]
LabelTemplateOpt = Annotated[Optional[str], typer.Option(
    help="Describe each label in a sentence, e.g. 'a review that is {label}' (after --verbalizer).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output file that pizoo did not write.")]
# The column flags of every command that reads data, declared once (eval's default to the task's own).
TextOpt = Annotated[Optional[str], typer.Option(help="Text column (default: text; none for an image task).")]
TextPairOpt = Annotated[Optional[str], typer.Option(help="Second text column (pairs).")]
LabelOpt = Annotated[str, typer.Option(help="Label column.")]
ChoicesOpt = Annotated[Optional[str], typer.Option(
    help="Column of each example's own candidate answers (multiple choice): a list, or one string of "
         "'A. ...' lines; the label is the gold's 0-based index, letter or text.")]
BoxesOpt = Annotated[Optional[str], typer.Option(
    help="Column of each example's candidate boxes in its image (referring expressions): a list of "
         "[x, y, w, h] in pixels (COCO's convention); with --image and --text (the expression); the label "
         "is the gold box's 0-based index, or a box matched to the candidate of highest IoU.")]
ImageOpt = Annotated[Optional[str], typer.Option(
    help="Image column: file paths relative to the data file, or image bytes (parquet). Needs a zoo on a "
         "model with an image side.")]


def report(e: PizooError) -> None:
    line = f"error: {e.message}"
    if e.hint:
        line += f" — fix: {e.hint}"
    sys.stderr.write(line + "\n")


def command(name: str, on: typer.Typer | None = None):
    """Register a command (on `app`, or on a command group) whose PizooErrors become one line on
    stderr and exit code 1 (2 for usage)."""

    def deco(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except PizooError as e:
                if os.environ.get("PIZOO_DEBUG") == "1":
                    raise
                report(e)
                raise typer.Exit(e.exit_code)
            except KeyboardInterrupt:
                sys.stderr.write("interrupted: nothing was written; the zoo is as it was\n")
                raise typer.Exit(130)
            except (typer.Exit, typer.Abort, click.exceptions.ClickException):
                raise
            except Exception as e:  # a bug, or a library failing in a way we did not foresee
                if os.environ.get("PIZOO_DEBUG") == "1":
                    raise
                first = (str(e).strip().splitlines() or [""])[0][:300]
                sys.stderr.write(f"error: unexpected {type(e).__name__}: {first} — fix: rerun with PIZOO_DEBUG=1 "
                                 "for the traceback and report it; the zoo is unchanged\n")
                raise typer.Exit(1)

        return (on or app).command(name, help=reflow(fn.__doc__))(run)

    return deco


def reflow(doc: str | None) -> str | None:
    """A command's docstring as help text: each prose paragraph on one line, so rich wraps it to the
    terminal (in rich markup mode typer keeps the source's line breaks); indented lines (examples)
    stay as they are. typer dedents the text after the first paragraph as a docstring, which
    ignores its first line's indent: a blank line first keeps "Example:" at indent 0 and so the
    examples indented below it."""
    if not doc:
        return doc
    first, *rest = [p if p.startswith((" ", "\b")) else " ".join(line.strip() for line in p.splitlines())
                    for p in inspect.cleandoc(doc).split("\n\n")]
    return first + ("\n\n\n" + "\n\n".join(rest) if rest else "")


def zoo_of(ctx: typer.Context):
    from pizoo.zoo import Zoo

    return Zoo(ctx.obj["zoo"])


def _allow_remote_code(value: bool) -> None:
    if value or "pizoo.models" in sys.modules:  # importing torch only to store False is not worth it
        import pizoo.models

        pizoo.models.remote_code_allowed = value


def _version(value: bool):
    if value:
        print(f"pizoo {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(ctx: typer.Context,
                 zoo: ZooOpt = Path("zoo"),
                 trust_remote_code: Annotated[bool, typer.Option(
                     "--trust-remote-code", help="Allow a zoo whose base model needs code from its folder or the "
                     "hub to run it (a zoo.toml alone never switches this on).")] = False,
                 version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                                 help="Show the version.")] = None):
    render.install()  # the library logs and reports progress; the CLI shows both on stderr
    _allow_remote_code(trust_remote_code)  # every command starts from the flag it was given
    ctx.obj = {"zoo": zoo}


def _outputs(zoo, force: bool, **paths) -> None:
    """Check every output file flag before any work: outside zoos, and not over a user's file."""
    from pizoo.outputs import check_output

    for flag, path in paths.items():
        if path is not None:
            check_output(path, zoo.root, force=force, flag=f"--{flag}")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _train_config(zoo, *, lr: float | None, **kwargs):
    """The training flags as the library's TrainConfig; --lr defaults to the zoo's kind's own."""
    from pizoo.experts import get_kind
    from pizoo.train import TrainConfig

    return TrainConfig(lr=get_kind(zoo.spec.kind).default_lr if lr is None else lr, **kwargs)  # --lr 0 is refused, not "default"


def _columns(text: str | None, text_pair: str | None, label: str, verbalizer: str | None,
             label_template: str | None = None, image: str | None = None, choices: str | None = None,
             boxes: str | None = None):
    """The column flags (and --verbalizer, --label-template) as the library's Columns; the text
    column is "text" unless the task is an image task."""
    from pizoo.data import Columns, parse_verbalizer

    text = text or (None if image else "text")
    return Columns(text, text_pair, label, parse_verbalizer(verbalizer), label_template, image, choices, boxes)


# -- init -------------------------------------------------------------------------------------
@command("init")
def init(ctx: typer.Context,
         base_model: Annotated[Optional[str], typer.Option(help="Model folder or hub id (default: pizoo:minilm, the packaged all-MiniLM-L6-v2; "
                                                               "pizoo:multimodal: the packaged DINOv2-small + MiniLM dual encoder, for image and text tasks).")] = None,
         head: Annotated[Optional[str], typer.Option(help="match | causal-lm | seq2seq | classification (default: the "
                                                       "shared-space head that fits the model: match for encoders).")] = None,
         kind: Annotated[str, typer.Option(help="Expert kind: lora | adapter | prompt | adalink")] = "lora",
         # the kinds' options (help texts: the Options dataclass of each kind in pizoo/experts/)
         rank: Annotated[Optional[int], typer.Option(help="Rank r: LoRA's rank, the bottleneck adapter's width, "
                                                     "AdaLink's rank.")] = None,
         alpha: Annotated[Optional[int], typer.Option(help="LoRA scaling alpha (the update is alpha/r · B A).")] = None,
         targets: Annotated[Optional[str], typer.Option(help="Modules to adapt: a comma list for LoRA (default: "
                                                        "peft's for the architecture), a regex over module names "
                                                        "for the adapter (default: attention and feed-forward "
                                                        "outputs).")] = None,
         dropout: Annotated[Optional[float], typer.Option(help="LoRA dropout.")] = None,
         virtual_tokens: Annotated[Optional[int], typer.Option(help="Number of learned virtual tokens.")] = None,
         template: Annotated[Optional[str], typer.Option(help="causal-lm/seq2seq prompt template with {text}.")] = None,
         pooling: Annotated[Optional[str], typer.Option(help="match: mean | cls (default: as the model was trained).")] = None,
         scale: Annotated[Optional[float], typer.Option(help="match: the cosine's scale (default 20).")] = None,
         region: Annotated[Optional[str], typer.Option(help="match: how the image tower sees a candidate box: crop "
                                                       "(the box alone) | blur (the image, blurred outside the box).")] = None,
         seed: Annotated[int, typer.Option(help="Seed of the zoo's shared initial expert and head, and of its probe expert.")] = 0,
         trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the model folder/hub.")] = False,
         json_: JsonOpt = False):
    """Create a zoo: one base model, one head type, one expert kind.

    Example:

      pizoo init --kind lora --rank 8

      pizoo --zoo ./llm-zoo init --base-model ./my-llama --head causal-lm --kind prompt

      pizoo --zoo ./mm-zoo init --base-model pizoo:multimodal   # image and text tasks in one zoo
    """
    from pizoo.tasks import init_zoo

    options = {"r": rank, "lora_alpha": alpha, "target_modules": targets, "lora_dropout": dropout,
               "num_virtual_tokens": virtual_tokens}
    if trust_remote_code:  # the user says so here, for this zoo
        _allow_remote_code(True)
    head_options = {"template": template, "pooling": pooling, "scale": scale, "region": region}
    zoo = init_zoo(ctx.obj["zoo"], base_model=base_model, head=head, kind=kind,
                   options={k: v for k, v in options.items() if v is not None},
                   head_options={k: v for k, v in head_options.items() if v is not None},
                   seed=seed, trust_remote_code=trust_remote_code)
    spec = zoo.spec
    info = {"zoo": str(zoo.root), "base_model": spec.base_model, "fingerprint": spec.fingerprint,
            "head": spec.head, "head_options": spec.head_options, "kind": spec.kind, "options": spec.options}
    if json_:
        render.emit_json(info)
    else:
        render.key_values({**info, "options": ", ".join(f"{k}={v}" for k, v in spec.options.items()),
                           "head_options": ", ".join(f"{k}={v!r}" for k, v in spec.head_options.items())},
                          title="zoo created")


# -- add-task ---------------------------------------------------------------------------------
@command("add-task")
def add_task(ctx: typer.Context,
             name: Annotated[str, typer.Argument(help="Task name: letters, digits, '-', '_', '.'.")],
             from_adapter: Annotated[Optional[Path], typer.Option(help="Import this PEFT adapter folder.")] = None,
             labels: Annotated[Optional[str], typer.Option(help="Label names, comma-separated (imports).")] = None,
             data: Annotated[Optional[Path], typer.Option(help="Training data: csv, tsv, json, jsonl or parquet.")] = None,
             eval_data: Annotated[Optional[Path], typer.Option(help="Evaluation data (default: a held-out 20%).")] = None,
             dataset: Annotated[Optional[str], typer.Option(help="A `datasets` name instead of --data (online).")] = None,
             dataset_config: Annotated[Optional[str], typer.Option(help="Its configuration.")] = None,
             split: Annotated[Optional[str], typer.Option(help="Its split.")] = None,
             text: TextOpt = None,
             text_pair: TextPairOpt = None,
             image: ImageOpt = None,
             label: LabelOpt = "label",
             verbalizer: VerbalizerOpt = None,
             label_template: LabelTemplateOpt = None,
             choices: ChoicesOpt = None,
             boxes: BoxesOpt = None,
             shots: Annotated[Optional[int], typer.Option(help="Train on N examples per class.")] = None,
             epochs: Annotated[Optional[int], typer.Option(help="Epochs (default: 10).")] = None,
             steps: Annotated[Optional[int], typer.Option(help="Optimizer steps instead of epochs.")] = None,
             lr: Annotated[Optional[float], typer.Option(help="Learning rate (default: per kind).")] = None,
             batch_size: Annotated[int, typer.Option(help="Batch size.")] = 16,
             grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
             max_length: Annotated[int, typer.Option(help="Max tokens per example.")] = 128,
             seed: Annotated[int, typer.Option(help="Seed for the eval split, the shots and the data order.")] = 0,
             device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
             precision: Annotated[str, typer.Option(help="no | bf16 | fp16 (GPU)")] = "no",
             embed: Annotated[bool, typer.Option(help="Compute the Fisher embedding after training.")] = True,
             fisher_samples: Annotated[Optional[int], typer.Option(help="Examples for the Fisher embedding.")] = None,
             json_: JsonOpt = False):
    """Add a task: train a new expert on its data, or import a PEFT adapter.

    Example:

      pizoo add-task sst2 --data sst2.csv --text sentence --label label --shots 16 --epochs 20

      pizoo add-task digits --data digits.csv --image path --label digit --shots 16

      pizoo add-task imported --from-adapter ./my-lora --labels neg,pos
    """
    from pizoo.adapters import import_adapter
    from pizoo.tasks import DataArgs, train_task

    zoo = zoo_of(ctx)
    if len([x for x in (from_adapter, data, dataset) if x is not None]) != 1:
        raise UsageError("give exactly one of --data FILE, --dataset NAME or --from-adapter DIR")
    if from_adapter is not None:
        manifest = import_adapter(zoo, name, from_adapter, labels=_csv(labels))
    else:
        cfg = _train_config(zoo, epochs=epochs, steps=steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                            seed=seed, device=device, precision=precision)
        args = DataArgs(data=str(data) if data else None, eval_data=str(eval_data) if eval_data else None,
                        dataset=dataset, dataset_config=dataset_config, split=split,
                        columns=_columns(text, text_pair, label, verbalizer, label_template, image, choices, boxes), shots=shots, seed=seed)
        manifest = train_task(zoo, name, args, cfg, max_length=max_length, embed=embed, fisher_samples=fisher_samples)
        if manifest is None:  # a non-main process of a distributed launch
            return
    _show(zoo, manifest.name, json_)
    if manifest.metrics.get("below_zero_shot") and not json_:
        render.below_zero_shot(name, manifest.metrics)


# -- list / show / rm / verify ----------------------------------------------------------------
def _summary(zoo, name: str) -> dict:
    try:
        m = zoo.manifest(name)
    except PizooError as e:  # one broken task.json must not hide the rest of the zoo
        return {"task": name, "how": "unreadable", "input": None, "labels": None, "accuracy": None,
                "embedded": None, "created": None, "error": e.message}
    from pizoo.graph import modality

    how = m.provenance.get("how", "?")
    return {"task": name, "how": how, "input": modality(m.source.get("columns")), "labels": len(m.labels),
            "accuracy": m.metrics.get("accuracy"), "embedded": zoo.has_embedding(m), "created": m.created}


@command("list")
def list_(ctx: typer.Context, json_: JsonOpt = False):
    """List the zoo's tasks (JSON lines with --json).

    Example:

      pizoo list --json | jq -r .task
    """
    zoo = zoo_of(ctx)
    rows = [_summary(zoo, n) for n in zoo.task_names()]
    if json_:
        render.emit_jsonl(rows)
    elif not rows:
        render.log(f"{zoo.root} has no tasks yet — add one with: pizoo add-task NAME --data FILE")
    else:
        render.table(rows, ["task", "how", "input", "labels", "accuracy", "embedded", "created"], title=str(zoo.root))


def _show(zoo, name: str, json_: bool) -> None:
    m = zoo.manifest(name)
    record = {"task": m.name, "labels": list(m.labels), "metrics": m.metrics, "source": m.source,
              "files": m.files, "provenance": m.provenance, "created": m.created}
    if json_:
        render.emit_json(record)
        return
    flat = {"task": m.name, "labels": ", ".join(m.labels), "created": m.created,
            "how": m.provenance.get("how")}
    flat.update({f"metric {k}": v for k, v in m.metrics.items() if not isinstance(v, (dict, list))})
    flat.update({f"file {k}": v[:16] + "…" for k, v in m.files.items()})
    for k in ("data", "adapter", "dataset"):
        if m.source.get(k):
            flat[f"source {k}"] = m.source[k]
    render.key_values(flat, title=f"task {m.name}")


@command("show")
def show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Task name.")], json_: JsonOpt = False):
    """Show one task: labels, metrics, source, files and provenance.

    Example:

      pizoo show sst2 --json
    """
    _show(zoo_of(ctx), name, json_)


@command("rm")
def rm(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Task name.")],
       yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False):
    """Remove a task and its files (asks first unless --yes).

    Example:

      pizoo rm old-task --yes
    """
    zoo = zoo_of(ctx)
    zoo.manifest(name)  # fail before asking if there is no such task
    if not yes and not typer.confirm(f"Remove task {name!r} from {zoo.root}?"):
        render.log("nothing removed")
        raise typer.Exit(1)
    zoo.remove_task(name)
    render.log(f"removed task {name!r}")


@command("verify")
def verify(ctx: typer.Context,
           quick: Annotated[bool, typer.Option("--quick", help="Presence of every file and the index only: no "
                                                               "re-hash, no content check.")] = False,
           json_: JsonOpt = False):
    """Re-hash and check every file of the zoo; exit 1 if anything is wrong.

    Reports missing, corrupt, foreign and non-finite files, experts without exactly the kind's
    tensors, and a stale index (which it rebuilds).

    Example:

      pizoo verify --json

      pizoo verify --quick
    """
    from pizoo.verify import expert_tensor_problems

    zoo = zoo_of(ctx)
    problems = zoo.verify(quick=quick) + ([] if quick else expert_tensor_problems(zoo))
    n = len(zoo.task_names())
    record = {"ok": not problems, "tasks": n, "schema_version": zoo.spec.schema_version,
              "problems": [p.as_dict() for p in problems]}
    if json_:
        render.emit_json(record)
    elif problems:
        render.table(record["problems"], ["task", "file", "issue"], title="problems")
    else:
        render.log(f"ok: {n} tasks, every file matches its task.json")
    if zoo.spec.schema_version < 2 and not json_:
        render.log(f"note: {zoo.root} is a schema {zoo.spec.schema_version} zoo (made before heads were plug-ins): it "
                   "opens as before; tasks without a kept data split read their original data files")
    if problems:
        raise typer.Exit(1)


# -- eval -------------------------------------------------------------------------------------
@command("eval")
def eval_(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Task name.")],
          data: Annotated[Optional[Path], typer.Option(help="Evaluate on this file (default: the eval split).")] = None,
          text: Annotated[Optional[str], typer.Option(help="Text column (default: the task's).")] = None,
          text_pair: TextPairOpt = None,
          image: ImageOpt = None,
          label: Annotated[Optional[str], typer.Option(help="Label column (default: the task's).")] = None,
          verbalizer: VerbalizerOpt = None,
          label_template: LabelTemplateOpt = None,
          choices: ChoicesOpt = None,
          boxes: BoxesOpt = None,
          on: Annotated[Optional[str], typer.Option(help="Score this other task's held-out split (cross-task).")] = None,
          device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
          json_: JsonOpt = False):
    """Accuracy of a task's expert on its held-out split, on a file, or on another task's split.

    With a shared-space head (match, causal-lm, seq2seq) any expert scores any task: the labels
    come from the data.

    Example:

      pizoo eval sst2 --data sst2-test.csv --json

      pizoo eval rt-sentiment --on clothing-recommended
    """
    from pizoo.evaluate import evaluate_task, task_columns

    zoo = zoo_of(ctx)
    columns = None
    if any((text, text_pair, label, verbalizer, label_template, image, choices, boxes)):  # what is not given stays the task's
        own = task_columns(zoo.manifest(name))
        columns = _columns(text or own.text, text_pair or own.text_pair, label or own.label, verbalizer,
                           label_template, image or own.image, choices or own.choices, boxes or own.boxes)
    result = evaluate_task(zoo, name, data=str(data) if data else None, columns=columns, on=on, device=device)
    if json_:
        render.emit_json(result)
    else:
        render.key_values({k: v for k, v in result.to_json().items() if k != "labels"}, title=f"eval {name}")


# -- embeddings -------------------------------------------------------------------------------
MetricOpt = Annotated[str, typer.Option(help="cosine (the paper) | normalized (its code, Task2Vec) | centred (cosine "
                                              "less the zoo mean, which the index keeps)")]
ByOpt = Annotated[Optional[str], typer.Option(
    "--by", help="fisher: task embeddings only | fit: each expert's fit to the target's labelled examples | both: "
    "embeddings recall the nearest --recall tasks, their fit orders them (default: both where the target has "
    "labelled data and the head one label space)")]
WhichOpt = Annotated[str, typer.Option(help="expert: Fisher at each task's expert | probe: at the shared probe")]


@command("embed")
def embed(ctx: typer.Context,
          name: Annotated[Optional[str], typer.Argument(help="Task name (or --all).")] = None,
          all_: Annotated[bool, typer.Option("--all", help="Recompute every task's embedding.")] = False,
          samples: Annotated[Optional[int], typer.Option(help="Examples to use (default: 256).")] = None,
          seed: Annotated[int, typer.Option(help="Seed that picks the examples.")] = 0,
          data: Annotated[Optional[Path], typer.Option(help="Data for a task without its own (imports).")] = None,
          text: TextOpt = None,
          text_pair: TextPairOpt = None,
          image: ImageOpt = None,
          label: LabelOpt = "label",
          verbalizer: VerbalizerOpt = None,
          label_template: LabelTemplateOpt = None,
          choices: ChoicesOpt = None,
          boxes: BoxesOpt = None,
          device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
          json_: JsonOpt = False):
    """(Re)compute task embeddings: the per-example diagonal Fisher at the task's expert and at the probe.

    Example:

      pizoo embed sst2 --samples 512

      pizoo embed --all
    """
    from pizoo.embed import embed_tasks

    zoo = zoo_of(ctx)
    if all_ == (name is not None):
        raise UsageError("give a task NAME or --all")
    columns = _columns(text, text_pair, label, verbalizer, label_template, image, choices, boxes) if data else None
    results = embed_tasks(zoo, zoo.task_names() if all_ else [name], keep_going=all_, samples=samples, seed=seed,
                          data=str(data) if data else None, columns=columns, device=device)
    if json_:
        render.emit_jsonl(results)
    else:
        for r in results:
            render.log(f"{r['task']}: " + ("embedded" if r["ok"] else f"failed: {r['error']}"))
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


@command("similar")
def similar(ctx: typer.Context,
            name: Annotated[Optional[str], typer.Argument(help="Task to rank the others against.")] = None,
            k: Annotated[Optional[int], typer.Option(help="Show the top k (default: all).")] = None,
            by: ByOpt = None,
            metric: MetricOpt = "cosine",
            which: Annotated[Optional[str], typer.Option(help="probe: Fisher at the shared probe (the default with a "
                                                         "shared label space) | expert: at each task's expert (the "
                                                         "default with per-task heads)")] = None,
            recall: Annotated[int, typer.Option(help="With --by both: tasks the embeddings recall for the fit.")] = 100,
            data: Annotated[Optional[Path], typer.Option(help="Zero-shot: rank tasks against this data (probe).")] = None,
            text: TextOpt = None,
            text_pair: TextPairOpt = None,
            image: ImageOpt = None,
            label: LabelOpt = "label",
            verbalizer: VerbalizerOpt = None,
            label_template: LabelTemplateOpt = None,
            choices: ChoicesOpt = None,
            boxes: BoxesOpt = None,
            samples: Annotated[Optional[int], typer.Option(help="Examples of --data to embed and fit (default: 256).")] = None,
            device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
            json_: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False):
    """Rank the zoo's tasks as sources for a task (or for new data): which experts will help it.

    Two stages, the path interpolate takes its candidates from: the Fisher task embeddings recall
    the nearest tasks (the zoo's index: fast at any size), then each recalled expert's fit to the
    target's labelled examples orders them (mean log-likelihood of the gold labels after one
    temperature per expert, and accuracy: forward passes only). --by fisher ranks by the embeddings
    alone; with --which as well, it needs neither torch nor the model.

    Example:

      pizoo similar refcocog --k 2

      pizoo similar refcocog --k 5 --by fisher --metric centred

      pizoo similar --data new-task.csv --k 3 --json
    """
    from pizoo.embed import similar_to_data
    from pizoo.predict import similar_to_task

    zoo = zoo_of(ctx)
    if (name is None) == (data is None):
        raise UsageError("give a task NAME or --data FILE")
    if data is not None:
        ranking = similar_to_data(zoo, str(data), _columns(text, text_pair, label, verbalizer, label_template, image, choices, boxes),
                                  k=k, metric=metric, samples=samples, device=device, by=by)
        title = f"tasks most similar to {data} (probe, {metric}"
    else:  # the title's parenthesis is closed by render.ranking, which says what ordered the rows
        ranking = similar_to_task(zoo, name, k=k, metric=metric, group=which, by=by, device=device,
                                  recall_count=recall)
        title = f"tasks most similar to {name} ({which or 'default embedding'}, {metric}"
    render.emit_jsonl(ranking.rows()) if json_ else render.ranking(ranking, title)


@command("graph")
def graph(ctx: typer.Context,
          out: Annotated[Path, typer.Option(help="Heatmap PNG to write.")] = Path("graph.png"),
          csv: Annotated[Optional[Path], typer.Option(help="Also write the matrix as CSV.")] = None,
          metric: MetricOpt = "cosine",
          which: WhichOpt = "expert",
          tasks: Annotated[Optional[str], typer.Option(help="Only these tasks (A,B,...).")] = None,
          around: Annotated[Optional[str], typer.Option(help="Only this task and its --k nearest.")] = None,
          k: Annotated[int, typer.Option(help="Neighbours drawn with --around.")] = 50,
          group: Annotated[str, typer.Option(help="none | modality (image, text, ...) | family (the name up "
                                                  "to its first '-'): rows of a group sit together.")] = "none",
          force: ForceOpt = False,
          json_: JsonOpt = False):
    """The task-similarity matrix as a clustered heatmap (the paper's Fig. 1) and CSV.

    Up to 300 tasks the matrix compares the exact Fisher vectors, beyond that the zoo index's
    sketches, and past 3,000 clusters of tasks (the JSON names each cluster's tasks); past 60 rows
    the figure drops its labels (the CSV keeps them).

    Example:

      pizoo graph --out graph.png --csv graph.csv --metric normalized

      pizoo graph --around refcocog --k 50 --out near-refcocog.png

      pizoo graph --group modality --out cross-modal.png
    """
    from pizoo.graph import similarity_matrix, task_groups
    from pizoo.plots import heatmap, write_matrix_csv

    zoo = zoo_of(ctx)
    _outputs(zoo, force, out=out, csv=csv)
    names, sim, exact, clusters = similarity_matrix(zoo, metric, which, tasks=_csv(tasks), around=around, k=k)
    groups = task_groups(zoo, names, group) if clusters is None else None
    kind = "exact" if exact else "sketches" if clusters is None else f"{sum(map(len, clusters.values()))} tasks in clusters"
    order = heatmap(names, sim, out, f"task similarity ({which} Fisher, {metric}, {kind})", groups)
    if csv:
        write_matrix_csv(names, sim, csv)
    record = {"png": str(out), "csv": str(csv) if csv else None, "order": order, "metric": metric, "exact": exact,
              "tasks": names, "matrix": sim.round(6).tolist() if len(names) <= 300 else None, "clusters": clusters,
              "groups": dict(zip(names, groups)) if groups is not None else None}
    if json_:
        return render.emit_json(record)
    render.log(f"wrote {out}" + (f" and {csv}" if csv else "") + f" ({len(names)} tasks, clustered order: "
               + ", ".join(order[:20]) + (" …" if len(order) > 20 else "") + ")")


# -- interpolation ----------------------------------------------------------------------------
@command("interpolate")
def interpolate(ctx: typer.Context,
                target: Annotated[str, typer.Option(help="The task to build a better expert for.")],
                k: Annotated[Optional[str], typer.Option(help="How many sources: a number (the top-k most similar) or "
                                                        "auto (short probes pick how many and which; the default, "
                                                        "except with --with: all of those).")] = None,
                with_: Annotated[Optional[str], typer.Option("--with", help="Mix with these tasks instead (A,B).")] = None,
                by: ByOpt = None,
                mode: Annotated[str, typer.Option(help="full: train α and all experts | alpha: α only")] = "full",
                granularity: Annotated[str, typer.Option(help="expert: one α | layer: one α per insertion site")] = "expert",
                init: Annotated[str, typer.Option(help="uniform: α = 0 | target: favour the target's expert")] = "uniform",
                metric: MetricOpt = "cosine",
                epochs: Annotated[Optional[int], typer.Option(help="Epochs (default: 10).")] = None,
                steps: Annotated[Optional[int], typer.Option(help="Optimizer steps instead of epochs.")] = None,
                lr: Annotated[Optional[float], typer.Option(help="Learning rate of the experts (default: per kind).")] = None,
                alpha_lr: Annotated[float, typer.Option(help="Learning rate of α.")] = 0.05,
                alpha_on: Annotated[str, typer.Option(help="With --mode alpha, fit α on: held-out (the eval split, "
                                                      "two-fold) | train (where the target's expert is favoured).")
                                    ] = "held-out",
                keep_best: Annotated[bool, typer.Option(help="Save another expert the run made (own, control, "
                                                        "probe, soup, a source alone, the untrained base) when it scores better on the "
                                                        "eval split beyond noise.")] = True,
                batch_size: Annotated[int, typer.Option(help="Batch size.")] = 16,
                shots: Annotated[Optional[int], typer.Option(help="Tune on N examples per class (default: the target's).")] = None,
                seed: Annotated[int, typer.Option(help="Seed for shots and data order.")] = 0,
                as_: Annotated[Optional[str], typer.Option("--as", help="Name of the new task (default: TARGET-pi).")] = None,
                data: Annotated[Optional[Path], typer.Option(help="Zero-shot: data of a task that has no expert.")] = None,
                zero_shot: Annotated[bool, typer.Option("--zero-shot", help="Use the nearest task's expert on --data.")] = False,
                text: TextOpt = None,
                text_pair: TextPairOpt = None,
                image: ImageOpt = None,
                label: LabelOpt = "label",
                verbalizer: VerbalizerOpt = None,
                label_template: LabelTemplateOpt = None,
                choices: ChoicesOpt = None,
                boxes: BoxesOpt = None,
                device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
                json_: JsonOpt = False):
    """Build a better expert for TARGET: learn softmax(α) over its expert and its most similar tasks' (π-Tuning).

    The result is saved as a new task (TARGET-pi, or --as) of one expert's size; the original is kept.
    It is compared on the target's eval split with every other expert the run made (own, control,
    probes, the uniform soup, each source alone) and with the untrained base, and unless
    --no-keep-best another is saved when it is better beyond noise (the summary and JSON say which,
    the log on what it won). By default
    (--k auto) short probes of the candidate sources pick how many and which (k = 0: none helped).

    Example:

      pizoo interpolate --target refcocog

      pizoo interpolate --target refcocog --k 2 --json

      pizoo interpolate --target sst2 --with imdb,yelp --mode alpha --granularity layer --as sst2-mix

      pizoo interpolate --target new-task --data new.csv --zero-shot --k 1
    """
    from pizoo.interpolate import interpolate_task
    from pizoo.mixture import MixSpec
    from pizoo.transfer import zero_shot as run_zero_shot

    zoo = zoo_of(ctx)
    if zero_shot != (data is not None):
        raise UsageError("--zero-shot and --data go together")
    if zero_shot:
        result = run_zero_shot(zoo, target, str(data), _columns(text, text_pair, label, verbalizer, label_template, image, choices, boxes),
                               k=k or 1, metric=metric, device="cpu" if device == "auto" else device, by=by)
        return render.emit_json(result) if json_ else render.zero_shot(result)
    cfg = _train_config(zoo, epochs=epochs, steps=steps, lr=lr, batch_size=batch_size, seed=seed, device=device)
    manifest = interpolate_task(zoo, target, cfg, with_=_csv(with_), k=k, metric=metric,
                                spec=MixSpec(mode, granularity, init), shots=shots, alpha_lr=alpha_lr, name=as_,
                                keep_best=keep_best, by=by, alpha_on=alpha_on)
    if manifest is None:  # a non-main process of a distributed launch
        return
    record = {"task": manifest.name, **manifest.provenance["interpolation"], "metrics": manifest.metrics}
    render.emit_json(record) if json_ else render.interpolation(record)


@command("curve")
def curve(ctx: typer.Context,
          target: Annotated[str, typer.Option(help="Task whose eval split measures accuracy.")],
          with_: Annotated[str, typer.Option("--with", help="The other end of the path.")],
          points: Annotated[int, typer.Option(help="Points along the path.")] = 21,
          out: Annotated[Optional[Path], typer.Option(help="Line plot PNG to write.")] = None,
          device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
          force: ForceOpt = False,
          json_: JsonOpt = False):
    """Accuracy along the linear path (1-t)·φ_target + t·φ_with between two experts (the paper's Fig. 3a).

    Example:

      pizoo curve --target sst2 --with imdb --points 21 --out curve.png --json
    """
    from pizoo.interpolate import curve as run_curve
    from pizoo.plots import curve as plot_curve

    zoo = zoo_of(ctx)
    _outputs(zoo, force, out=out)
    pts = run_curve(zoo, target, with_, points, device)
    if out:
        plot_curve([p["t"] for p in pts], [p["accuracy"] for p in pts], out, target, with_)
    if json_:
        render.emit_json({"target": target, "with": with_, "points": pts, "png": str(out) if out else None})
    else:
        render.table(pts, ["t", "accuracy"], title=f"{target} → {with_}")
        if out:
            render.log(f"wrote {out}")


@command("landscape")
def landscape(ctx: typer.Context,
              target: Annotated[str, typer.Option(help="Task whose eval split scores the plane.")],
              with_: Annotated[Optional[str], typer.Option("--with", help="The two other experts (B,C; default: "
                                                           "the target's top 2).")] = None,
              out: Annotated[Path, typer.Option(help="PNG to write (loss and accuracy side by side).")] = Path("plane.png"),
              resolution: Annotated[int, typer.Option(help="Grid points per unit of each axis.")] = 8,
              margin: Annotated[float, typer.Option(help="How far the grid reaches past the experts.")] = 0.25,
              samples: Annotated[int, typer.Option(help="Eval examples scored per point (0: all).")] = 256,
              pi: Annotated[Optional[str], typer.Option(help="π result to mark (default: the target's "
                                                        "interpolation with these two, if any).")] = None,
              metric: MetricOpt = "cosine",
              device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
              force: ForceOpt = False,
              json_: JsonOpt = False):
    """Loss and accuracy over the plane through three experts (the paper's Fig. 3c).

    Point (a, b) is (1-a-b)·φ_target + a·φ_B + b·φ_C on the target's eval split; the three experts,
    their uniform soup and the π result are marked. --json prints the grid.

    Example:

      pizoo landscape --target sst2 --with imdb,yelp --out plane.png

      pizoo landscape --target sst2 --resolution 4 --json > plane.json
    """
    from pizoo.landscape import landscape as run_landscape
    from pizoo.plots import plane

    zoo = zoo_of(ctx)
    _outputs(zoo, force, out=out)
    result = run_landscape(zoo, target, _csv(with_), resolution=resolution, margin=margin,
                           samples=samples or None, pi=pi, metric=metric, device=device).to_json()
    plane(result, out)
    if json_:
        return render.emit_json({**result, "png": str(out)})
    render.table(result["points"], ["name", "role", "a", "b", "accuracy", "loss"],
                 title=f"plane through {target}, {', '.join(result['with'])} ({len(result['grid'])} points)")
    render.log(f"wrote {out}")


# -- hyper ------------------------------------------------------------------------------------
hyper_app = typer.Typer(help="HyperPELT: one hypernetwork that generates every task's expert from its task "
                        "embedding (train it over the zoo, generate experts for new data, show its size).",
                        no_args_is_help=True)
app.add_typer(hyper_app, name="hyper")


@command("train", on=hyper_app)
def hyper_train(ctx: typer.Context,
                tasks: Annotated[Optional[str], typer.Option(help="Train over these tasks (A,B,...; default: every "
                                                             "task trained on its own data).")] = None,
                all_: Annotated[bool, typer.Option("--all", help="Every task trained on its own data (not imported, "
                                                   "interpolated or generated): the default without --tasks.")] = False,
                epochs: Annotated[Optional[int], typer.Option(help="Epochs over all tasks' batches (default: 10).")] = None,
                steps: Annotated[Optional[int], typer.Option(help="Optimizer steps instead of epochs.")] = None,
                lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
                batch_size: Annotated[int, typer.Option(help="Examples per batch (one task per batch).")] = 16,
                z_dim: Annotated[int, typer.Option(help="Size of the task embedding z.")] = 32,
                hidden: Annotated[int, typer.Option(help="Size of the hyper-embedding I.")] = 32,
                sites: Annotated[Optional[str], typer.Option(help="Generate only at these insertion sites of the "
                                                             "zoo's kind: comma list of regexes over the site names "
                                                             "(e.g. attention, output, vision_model); default: all.")] = None,
                max_length: Annotated[int, typer.Option(help="Max tokens per example.")] = 128,
                seed: Annotated[int, typer.Option(help="Seed of the hypernetwork and the data order.")] = 0,
                device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
                json_: JsonOpt = False):
    """Train the zoo's hypernetwork over its tasks (multi-task, base model frozen); stored in <zoo>/_hyper/.

    Example:

      pizoo hyper train --epochs 10

      pizoo hyper train --tasks sst2,imdb,yelp --steps 500 --json

      pizoo hyper train --sites 'layer\\.\\d+\\.output$'   # an adapter zoo: after the feed-forward blocks only
    """
    from pizoo.hyper import train_hyper
    from pizoo.hypernet import HyperSpec
    from pizoo.train import TrainConfig

    if all_ and tasks:
        raise UsageError("--all and --tasks name the tasks twice: give one of them")
    cfg = TrainConfig(epochs=epochs, steps=steps, lr=lr, batch_size=batch_size, seed=seed, device=device)
    spec = HyperSpec((), z_dim=z_dim, hidden=hidden, seed=seed, sites=tuple(_csv(sites) or ()))
    record = train_hyper(zoo_of(ctx), cfg, tasks=_csv(tasks), spec=spec, max_length=max_length)
    if record is None:  # a non-main process of a distributed launch
        return
    if json_:
        return render.emit_json(record)
    render.table([{"task": t, "accuracy": a} for t, a in record.accuracy.items()], ["task", "accuracy"],
                 title=f"hypernetwork: generated experts on each task's eval split ({record.steps} steps)")
    render.key_values(record.parameters, title="parameters")


@command("generate", on=hyper_app)
def hyper_generate(ctx: typer.Context,
                   name: Annotated[str, typer.Argument(help="Name of the new task.")],
                   data: Annotated[Path, typer.Option(help="The new task's data: csv, tsv, json, jsonl or parquet.")],
                   eval_data: Annotated[Optional[Path], typer.Option(help="Evaluation data (default: a held-out 20%).")] = None,
                   text: TextOpt = None,
                   text_pair: TextPairOpt = None,
                   image: ImageOpt = None,
                   label: LabelOpt = "label",
                   verbalizer: VerbalizerOpt = None,
                   label_template: LabelTemplateOpt = None,
                   choices: ChoicesOpt = None,
                   boxes: BoxesOpt = None,
                   shots: Annotated[Optional[int], typer.Option(help="Tune on N examples per class.")] = None,
                   tune: Annotated[str, typer.Option(help="none | task-embedding (z only: HyperPELT TaskEmbed) | all")] = "task-embedding",
                   epochs: Annotated[Optional[int], typer.Option(help="Tuning epochs (default: 10).")] = None,
                   lr: Annotated[float, typer.Option(help="Tuning learning rate.")] = 1e-2,
                   max_length: Annotated[int, typer.Option(help="Max tokens per example.")] = 128,
                   seed: Annotated[int, typer.Option(help="Seed for the eval split, the shots and the data order.")] = 0,
                   device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
                   json_: JsonOpt = False):
    """A new task whose expert the hypernetwork generates from the data's probe embedding, then tunes.

    The expert is saved as plain tensors of the zoo's kind: eval, embed, similar, interpolate and
    export treat the task like any other. Its accuracy before tuning is kept as accuracy_generated.

    Example:

      pizoo hyper generate new-task --data new.csv --shots 16 --tune task-embedding
    """
    from pizoo.hyper import generate_task
    from pizoo.tasks import DataArgs
    from pizoo.train import TrainConfig

    zoo = zoo_of(ctx)
    args = DataArgs(data=str(data), eval_data=str(eval_data) if eval_data else None,
                    columns=_columns(text, text_pair, label, verbalizer, label_template, image, choices, boxes), shots=shots, seed=seed)
    manifest = generate_task(zoo, name, args, TrainConfig(epochs=epochs, lr=lr, seed=seed, device=device), tune=tune,
                             max_length=max_length)
    _show(zoo, manifest.name, json_)


@command("show", on=hyper_app)
def hyper_show(ctx: typer.Context, json_: JsonOpt = False):
    """The hypernetwork's tasks, sizes and parameter count against one expert per task.

    Example:

      pizoo hyper show --json
    """
    from pizoo.hypernet import show

    info = show(zoo_of(ctx))
    if json_:
        return render.emit_json(info)
    render.key_values({k: v for k, v in info.items() if k != "accuracy"}, title="hypernetwork")


# -- export -----------------------------------------------------------------------------------
@command("convert-refer")
def convert_refer(ctx: typer.Context,
                  refs: Annotated[Path, typer.Option(help="The refer toolkit's refs as JSON (refs(unc).p converted: "
                                                     "pizoo never unpickles), or a table with ann_id, image_id, "
                                                     "sentences (the hub's jxu124/refcoco parquet).")],
                  instances: Annotated[Path, typer.Option(help="COCO's instances.json of the same dataset: every "
                                                          "annotated object of an image is a candidate box.")],
                  images: Annotated[Path, typer.Option(help="The COCO image folder (e.g. train2014).")],
                  out: Annotated[Path, typer.Option(help="Parquet file to write: one row per expression.")],
                  split: Annotated[Optional[str], typer.Option(help="Keep the refs of this split only (train, val, "
                                                               "test, testA, testB).")] = None,
                  force: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
                  json_: JsonOpt = False):
    """Make RefCOCO / RefCOCO+ / RefCOCOg data, as the refer toolkit publishes it, into a table
    add-task reads (image, expression, boxes, gold).

    Example:

      pizoo convert-refer --refs refcocog/refs.json --instances refcocog/instances.json \\
          --images coco/train2014 --split train --out refcocog-train.parquet

      pizoo add-task refcocog --data refcocog-train.parquet --image image --text expression \\
          --boxes boxes --label gold --shots 16
    """
    from pizoo.refer import write_refer_table

    _outputs(zoo_of(ctx), force, out=out)
    result = write_refer_table(refs, instances, images, out, split)
    if json_:
        render.emit_json(result)
    else:
        render.key_values(result, title="convert-refer")


@command("export")
def export(ctx: typer.Context,
           name: Annotated[str, typer.Argument(help="Task to export.")],
           out: Annotated[Path, typer.Option(help="Folder to write.")],
           format_: Annotated[str, typer.Option("--format", help="peft: adapter folder | merged: full model folder")] = "peft",
           force: Annotated[bool, typer.Option(help="Replace a non-empty --out folder.")] = False,
           json_: JsonOpt = False):
    """Export a task's expert as a PEFT adapter folder or a merged transformers model, with a model card.

    Example:

      pizoo export sst2 --out exported/sst2

      pizoo export sst2-pi --out exported/sst2-merged --format merged
    """
    from pizoo.export import export_task

    result = export_task(zoo_of(ctx), name, out, fmt=format_, force=force)
    if json_:
        render.emit_json(result)
    else:
        render.log(f"wrote {result.out} ({result.format}): {', '.join(result.files)}")


def main() -> None:
    app(prog_name="pizoo")
