"""The paper's central claim on real packaged tasks: in the low-shot regime, does interpolating a
target's expert with the experts of similar tasks beat the target's own expert?

For every task of zoo/recipes as target, for each shot count and seed, on the packaged MiniLM
with the zoo's head (--head; default `match`, the shared label space):
  base    the base model alone, no expert (zero-shot; only a shared-space head can do this)
  own     the target's expert trained on the shots alone
  own2x   the same, trained for twice the epochs: the compute of own + one interpolation, the
          baseline a sceptic asks for first (is a gain transfer, or just more training?)
  soup    the uniform soup of the target's expert and its top-k sources (no tuning)
  alpha   interpolate --mode alpha (only the softmax weights trained)
  full    interpolate --mode full (weights and all experts trained: the paper's setting)
Sources are experts trained on each other task's full pool (the zoo a user would have); the
target's own full-data expert is never a source. Gains are counted against the better of own and
own2x. Then, as in the paper's Fig. 3b, the correlation between a source's similarity to the target
and the gain of interpolating with it alone (k = 1, mode alpha), for both similarity metrics; and
hubness: how often each source is a target's nearest neighbour, and how often a target's top-2
are of its own family (sentiment, topic, subjectivity).

    .venv/bin/python benchmarks/transfer.py [--shots 16,64] [--seeds 0,1,2] [--k 2] [--head match]

With --modality image the targets and sources are the image tasks of zoo/image-recipes (MNIST,
8x8 digits, Fashion-MNIST where installed) on pizoo:multimodal (DINOv2-small + MiniLM).

It prints a table and writes it into BENCHMARKS.md (between the transfer markers). Slow: about
two hours on 2 CPU cores with the defaults. Every finished (target, shots, seed) run is appended
to a JSON-lines record file (--records); a rerun with the same settings reads it and measures
only the runs it lacks, so a run that is cut short resumes where it stopped; --report-only
tabulates what the record file holds without measuring anything.
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

from _common import append_record, load_records, put_block, tmpdir  # noqa: E402


def quiet():
    return contextlib.redirect_stderr(io.StringIO())


FAMILY = {"rt-sentiment": "sentiment", "clothing-recommended": "sentiment", "clothing-rating": "sentiment",
          "bbc-topic": "topic", "clothing-department": "topic", "rt-subjectivity": "subjectivity",
          # image families: which digit (two sources of digits, and one pair of digits), a property of
          # the digit, which article of clothing
          "mnist-digit": "digit", "digits-8x8": "digit", "mnist-3v8": "digit",
          "mnist-parity": "digit property", "mnist-high": "digit property", "fashion-type": "fashion"}
METHODS = ("base", "own", "own2x", "soup", "alpha", "full")


def mean_sd(xs):
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


def write(args, results, pairs, footer: str, done: bool, hubs=None, total=None) -> None:
    """Print the table and put it into BENCHMARKS.md; called after every target, so a long run
    that is cut short still leaves what it measured (marked partial)."""
    from scipy.stats import binomtest, pearsonr, spearmanr

    n_targets = len({t for t, _ in results})
    n_runs = sum(len(row["own"]) for row in results.values())
    present = [m for m in METHODS if m in next(iter(results.values()))]  # old records lack base, own2x
    names = {"base": "base model", "own": "own expert", "own2x": "own, 2x steps", "soup": "uniform soup",
             "alpha": "interpolate alpha", "full": "interpolate full"}
    of = f" of {total}" if total else ""
    lines = [("" if done else f"**Partial run** ({n_runs}{of} runs; interrupted or still running): ")
             + f"Head `{args.head}`. Targets: {n_targets} real tasks; shots per class {args.shots}; seeds "
             f"{args.seeds}; k = {args.k}; {args.epochs} epochs for the target expert and for each interpolation "
             f"(own2x: {2 * args.epochs}); lr {args.lr}; sources trained {args.source_epochs} epochs on each other "
             f"task's pool. Accuracy on each target's held-out 20% (mean ± sd over seeds).", "",
             "| target | shots | " + " | ".join(names[m] for m in present) + " |",
             "| --- | --- |" + " --- |" * len(present)]
    overall = {m: [] for m in present}
    by_shots: dict[int, dict[str, list]] = {}
    for (target, n), row in results.items():
        cells = []
        for m in present:
            mu, sd = mean_sd(row[m])
            overall[m] += row[m]
            by_shots.setdefault(n, {k: [] for k in present})[m] += row[m]
            cells.append(f"{mu:.3f} ± {sd:.3f}")
        lines.append(f"| {target} | {n} | " + " | ".join(cells) + " |")
    lines.append("| **all** | | " + " | ".join(f"**{statistics.mean(overall[m]):.3f}**" for m in present) + " |")
    lines += ["", "Against the better of the two own-expert runs (own, own2x), per run:" if "own2x" in present
              else "Against the own expert, per run:", "",
              "| shots | method | mean gain | wins / ties / losses | sign test p |", "| --- | --- | --- | --- | --- |"]
    for n, rows in sorted(by_shots.items()) + [("all", overall)]:
        best = [max(a, b) for a, b in zip(rows["own"], rows.get("own2x", rows["own"]))]
        for m in [m for m in ("base", "soup", "alpha", "full") if m in rows]:
            d = [x - o for x, o in zip(rows[m], best)]
            w, l_ = sum(x > 1e-9 for x in d), sum(x < -1e-9 for x in d)
            p = binomtest(w, w + l_).pvalue if w + l_ else 1.0
            lines.append(f"| {n} | {m} | {statistics.mean(d):+.3f} | {w} / {len(d) - w - l_} / {l_} | {p:.3f} |")
    cos, nor, gain = zip(*pairs) if pairs else ((), (), ())
    lines += ["", f"Similarity of a source to the target against the accuracy gain of interpolating with "
              f"it alone (k = 1, mode alpha, {args.corr_steps} steps) over the own expert, over {len(pairs)} "
              f"(target, source, shots, seed) pairs:", "", "| metric | Pearson r | Spearman ρ |", "| --- | --- | --- |"]
    for label, xs in (("cosine", cos), ("normalized", nor)):
        if len(xs) > 2:
            lines.append(f"| {label} | {pearsonr(xs, gain)[0]:.3f} | {spearmanr(xs, gain)[0]:.3f} |")
    if hubs:
        fams = {}  # the families of the targets measured, with every task of them
        measured = {FAMILY.get(r[0]) for r in results}
        for t, f in FAMILY.items():
            if f in measured:
                fams.setdefault(f, []).append(t)
        fam_text = "; ".join(f"{f} = {', '.join(sorted(ts))}" for f, ts in sorted(fams.items()))
        lines += ["", "Hubness of the expert-Fisher ranking (over the runs above): how often each source is a "
                  "target's nearest neighbour, and the share of a target's top 2 that are of its own family, out "
                  f"of min(2, family members) (families: {fam_text}; a task alone in its family is left "
                  "out of the share).", "",
                  "| metric | top-1 counts | same-family share of the top 2 |", "| --- | --- | --- |"]
        for metric, (top1, prec) in hubs.items():
            counts = ", ".join(f"{t} {c}" for t, c in sorted(top1.items(), key=lambda kv: -kv[1]))
            lines.append(f"| {metric} | {counts} | {statistics.mean(prec):.3f} |" if prec else f"| {metric} | {counts} | – |")
    lines += ["", footer]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        tag = "transfer" if args.head == "classification" else f"transfer-{args.head}"
        title = f"Transfer on real tasks, head `{args.head}`"
        if args.modality == "image":
            tag, title = tag + "-image", f"Transfer on real image tasks (pizoo:multimodal), head `{args.head}`"
        put_block(tag, title, "transfer.py", table)


def hubness(records) -> dict:
    """Per metric: how often each source is top-1, and same-family precision@2 per run."""
    out = {}
    for i, metric in enumerate(("cosine", "normalized")):
        top1, prec = {}, []
        for rec in records:
            sims = rec["sims"]
            ranked = sorted(sims, key=lambda s: -sims[s][i])
            first = ranked[0].removeprefix("src-")
            top1[first] = top1.get(first, 0) + 1
            fam = FAMILY.get(rec["target"])
            peers = [t for t, f in FAMILY.items() if f == fam and t != rec["target"]]
            if peers:
                prec.append(sum(FAMILY.get(s.removeprefix("src-")) == fam for s in ranked[:2]) / min(2, len(peers)))
        out[metric] = (top1, prec)
    return out


def source_zoo(args, init_zoo):
    """The zoo of source experts, kept between invocations (benchmarks/.cache, one per setting):
    training them is the first quarter of an hour of every run. Tasks other than the sources are
    leftovers of a run that was cut short, and go."""
    from pizoo.zoo import Zoo

    image = getattr(args, "modality", "text") == "image"  # choose_k.py and hyper.py run text tasks only
    path = ROOT / "benchmarks" / ".cache" / (f"sources-{args.head}-e{args.source_epochs}-lr{args.lr:g}"
                                             + ("-image" if image else ""))
    if not (path / "zoo.toml").exists():
        from pizoo.builtin import ALIAS

        return init_zoo(path, head=args.head, base_model=ALIAS if image else None)
    zoo = Zoo(path)
    for name in zoo.task_names():
        if not name.startswith("src-"):
            zoo.remove_task(name)
    return zoo


def columns(args):
    from pizoo.data import Columns

    return Columns(text=None, image="image") if getattr(args, "modality", "text") == "image" else Columns()


def train_sources(zoo, files, args, cfg, log) -> None:
    """The zoo: one expert per task on its whole training pool (those the cache lacks)."""
    from pizoo.tasks import DataArgs, train_task

    for f in files:
        if zoo.has_task(f"src-{f.stem}"):
            continue
        with quiet():
            m = train_task(zoo, f"src-{f.stem}", DataArgs(data=str(f), columns=columns(args), seed=0),
                           cfg(0, epochs=args.source_epochs), max_length=64, fisher_samples=128)
        log(f"source {f.stem}: accuracy {m.metrics['accuracy']:.3f} on {m.metrics['n_eval']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shots", default="16,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--k", default="2", help="k of the own/soup/alpha/full comparison; a list such as 1,2,4,auto "
                    "compares k = auto with fixed k instead (benchmarks/choose_k.py)")
    ap.add_argument("--epochs", type=int, default=15, help="epochs of the few-shot target and of interpolation")
    ap.add_argument("--source-epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--corr-steps", type=int, default=15, help="steps of each k=1 alpha interpolation")
    ap.add_argument("--tasks", default=None, help="comma list of recipe names [default: all]")
    ap.add_argument("--targets", default=None, help="comma list of tasks to use as targets [default: all tasks]")
    ap.add_argument("--records", default=None, help="JSON-lines file of finished runs, read to resume and appended "
                    "to [default: benchmarks/results/transfer-runs.jsonl, or choose-k-runs.jsonl with a list of k]")
    ap.add_argument("--head", default="match", help="the zoo's head (classification: the old per-task heads)")
    ap.add_argument("--modality", default="text", choices=("text", "image"),
                    help="image: the image tasks of zoo/image-recipes on pizoo:multimodal")
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    ap.add_argument("--before-after", action="store_true",
                    help="with --k auto: measure the runs missing under today's seeded loop (and own with the same "
                    "compute), then tabulate auto before and after issue 25's ranking and keep rule")
    ap.add_argument("--agreement", action="store_true",
                    help="with a list of k: measure nothing; how often the eval split's order of two experts is "
                    "the test split's (the choose-k records with k = 1, 2, 4)")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: tabulate the runs the record file holds for these settings")
    args = ap.parse_args()
    if "," in args.k or args.k == "auto":
        import choose_k

        return choose_k.run(args, args.k.split(","))
    args.k = int(args.k)
    args.records = args.records or str(ROOT / "benchmarks" / "results" / "transfer-runs.jsonl")
    shots = [int(s) for s in args.shots.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    import prepare

    from pizoo.embed import load_embedding
    from pizoo.interpolate import interpolate_task
    from pizoo.mixture import MixSpec
    from pizoo.similarity import similarity
    from pizoo.tasks import DataArgs, init_zoo, train_task
    from pizoo.train import TrainConfig

    start = time.perf_counter()
    work = tmpdir()
    with quiet():
        files = (prepare.main_images if args.modality == "image" else prepare.main)(str(work / "data"))
    if args.tasks:
        keep = set(args.tasks.split(","))
        files = [f for f in files if f.stem in keep]
    targets = [f for f in files if not args.targets or f.stem in args.targets.split(",")]
    settings = {"epochs": args.epochs, "source_epochs": args.source_epochs, "lr": args.lr, "k": args.k,
                "corr_steps": args.corr_steps, "sources": sorted(f.stem for f in files)}
    if args.head != "classification":  # the records of the per-task-head runs carry no head
        settings["head"] = args.head
    if args.modality != "text":  # nor do those of the text tasks carry a modality
        settings["modality"] = args.modality
    records_path = Path(args.records)
    done_runs = load_records(records_path, ("target", "shots", "seed"), settings)
    wanted = [(f.stem, n, seed) for f in targets for n in shots for seed in seeds]
    todo = [w for w in wanted if w not in done_runs]
    print(f"{len(wanted) - len(todo)} of {len(wanted)} runs already in {records_path}", file=sys.stderr)

    def tabulate(upto):
        results, pairs = {}, []  # (target, shots) -> {method: [acc per seed]}; (cosine, normalized, gain)
        methods = [m for m in METHODS if all(m in done_runs[k] for k in upto if k in done_runs)]
        for key in upto:
            if key in done_runs:
                rec = done_runs[key]
                row = results.setdefault(key[:2], {m: [] for m in methods})
                for m in row:
                    row[m].append(rec[m])
                pairs += [tuple(p) for p in rec["pairs"]]
        return results, pairs

    def hubs(upto):
        recs = [done_runs[k] for k in upto if k in done_runs and "sims" in done_runs[k]]
        return hubness(recs) if recs else None

    if args.report_only:
        results, pairs = tabulate(wanted)
        if not results:
            sys.exit(f"no runs with these settings in {records_path}")
        shown = records_path.resolve().relative_to(ROOT) if records_path.resolve().is_relative_to(ROOT) else records_path
        write(args, results, pairs, f"Tabulated from the record file `{shown}` "
              f"({len(wanted) - len(todo)} of {len(wanted)} runs).", done=not todo, hubs=hubs(wanted),
              total=len(wanted))
        return
    zoo = source_zoo(args, init_zoo)
    cfg = lambda seed, **kw: TrainConfig(lr=args.lr, seed=seed, device="cpu", **kw)  # noqa: E731

    def log(msg):
        print(f"[{time.perf_counter() - start:6.0f}s] {msg}", file=sys.stderr, flush=True)

    if todo:
        train_sources(zoo, files, args, cfg, log)

    for f in targets:
        sources = [f"src-{g.stem}" for g in files if g != f]
        for n in shots:
            for seed in seeds:
                if (f.stem, n, seed) in done_runs:
                    continue
                name = f"{f.stem}-{n}-s{seed}"
                data = DataArgs(data=str(f), columns=columns(args), shots=n, seed=seed)
                with quiet():
                    own = train_task(zoo, name, data, cfg(seed, epochs=args.epochs), max_length=64,
                                     fisher_samples=128)
                    own2x = train_task(zoo, f"{name}-2x", data, cfg(seed, epochs=2 * args.epochs), max_length=64,
                                       embed=False)
                vec = load_embedding(zoo, name)
                sims = {s: (similarity(vec, load_embedding(zoo, s), "cosine"),
                            similarity(vec, load_embedding(zoo, s), "normalized")) for s in sources}
                top = sorted(sources, key=lambda s: -sims[s][0])[: args.k]
                with quiet():
                    a = interpolate_task(zoo, name, cfg(seed, epochs=args.epochs), with_=top,
                                         spec=MixSpec(mode="alpha"), name=f"{name}-alpha", embed=False,
                                         keep_best=False)
                    b = interpolate_task(zoo, name, cfg(seed, epochs=args.epochs), with_=top,
                                         spec=MixSpec(mode="full"), name=f"{name}-full", embed=False,
                                         keep_best=False)
                rec = {"settings": settings, "target": f.stem, "shots": n, "seed": seed, "top": top,
                       "base": own.metrics["accuracy_zero_shot"], "own": own.metrics["accuracy"],
                       "own2x": own2x.metrics["accuracy"], "soup": a.metrics["accuracy_uniform_mixture"],
                       "alpha": a.metrics["accuracy"], "full": b.metrics["accuracy"], "pairs": [],
                       "sims": sims, "alpha_weights": {"alpha": a.provenance["interpolation"]["alpha"],
                                                       "full": b.provenance["interpolation"]["alpha"]}}
                log(f"{name}: base {rec['base']:.3f} own {rec['own']:.3f} own2x {rec['own2x']:.3f} "
                    f"soup {rec['soup']:.3f} alpha {rec['alpha']:.3f} full {rec['full']:.3f} (top: {', '.join(top)})")
                for s in sources:  # Fig. 3b: similarity against the gain of mixing with that source alone
                    with quiet():
                        one = interpolate_task(zoo, name, cfg(seed, steps=args.corr_steps), with_=[s],
                                               spec=MixSpec(mode="alpha"), name=f"{name}-with-{s}", embed=False,
                                               keep_best=False)
                    rec["pairs"].append([*sims[s], one.metrics["accuracy"] - own.metrics["accuracy"]])
                    zoo.remove_task(one.name)
                for t in (a.name, b.name, name, own2x.name):
                    zoo.remove_task(t)
                done_runs[(f.stem, n, seed)] = rec
                append_record(records_path, rec)  # a crash loses at most the run in flight
        results, pairs = tabulate(wanted)  # every finished run, this invocation's and those it resumed from
        if results:
            left = sum(w not in done_runs for w in wanted)
            write(args, results, pairs, f"Wall time of the invocation that wrote this: "
                  f"{time.perf_counter() - start:.0f} s.", done=not left, hubs=hubs(wanted), total=len(wanted))


if __name__ == "__main__":
    main()
