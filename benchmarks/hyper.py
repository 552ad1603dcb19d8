"""HyperPELT against the target's own expert and π-Tuning, on the packaged tasks (issue: HyperPELT).

    .venv/bin/python benchmarks/hyper.py --shots 16 --seeds 0,1,2

For every packaged task as target: a hypernetwork is trained over the other five tasks' experts'
data (leave one out: it never sees the target), then per seed the target gets `shots` per class
for training and as many for its eval split, and is measured on a test split nothing was chosen
on (the splits of benchmarks/choose_k.py). Side by side on the same splits:
  own          the target's expert trained on the shots
  pi-full-k2   interpolate --mode full --k 2 (raw, no keep-best)
  hyper-none   the expert generated from the target's probe embedding, no tuning
  hyper-z      HyperPELT TaskEmbed: only the task embedding z tuned on the shots
  hyper-all    the whole hypernetwork tuned on the shots (a copy; the zoo's stays as it was)
with the trained parameter count and the training seconds of each. Records go to a JSON-lines
file (resumable); the table goes into BENCHMARKS.md between the hyper markers."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("own", "pi-full-k2", "hyper-none", "hyper-z", "hyper-all")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shots", default="16")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=15, help="epochs of the own expert, π and the tuning")
    ap.add_argument("--hyper-epochs", type=int, default=3, help="epochs of the hypernetwork over the sources' data")
    ap.add_argument("--hyper-lr", type=float, default=1e-3)
    ap.add_argument("--tune-lr", type=float, default=1e-2, help="learning rate of hyper generate's tuning")
    ap.add_argument("--source-epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--head", default="match")
    ap.add_argument("--targets", default=None)
    ap.add_argument("--records", default=str(ROOT / "benchmarks" / "results" / "hyper-runs.jsonl"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "demo"))
    import prepare
    from _common import append_record, load_records, tmpdir
    from choose_k import splits
    from transfer import quiet, source_zoo, train_sources

    from pizoo.data import Columns
    from pizoo.evaluate import evaluate_task
    from pizoo.hyper import generate_task, train_hyper
    from pizoo.hypernet import HyperSpec
    from pizoo.interpolate import interpolate_task
    from pizoo.mixture import MixSpec
    from pizoo.tasks import DataArgs, init_zoo, train_task
    from pizoo.train import TrainConfig

    shots = [int(s) for s in args.shots.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = {k: getattr(args, k) for k in ("epochs", "hyper_epochs", "hyper_lr", "tune_lr", "source_epochs", "lr",
                                               "head")}
    path = Path(args.records)
    done = load_records(path, ("target", "shots", "seed"), settings)
    start = time.perf_counter()
    work = tmpdir()
    with quiet():
        files = prepare.main(str(work / "data"))
    targets = [f for f in files if not args.targets or f.stem in args.targets.split(",")]
    wanted = [(f.stem, n, s) for f in targets for n in shots for s in seeds]

    def log(msg):
        print(f"[{time.perf_counter() - start:6.0f}s] {msg}", file=sys.stderr, flush=True)

    def report():
        recs = [done[w] for w in wanted if w in done]
        if recs:
            write(args, recs, len(recs) == len(wanted), time.perf_counter() - start)

    if args.report_only:
        return report()
    zoo = source_zoo(args, init_zoo)
    cfg = lambda seed, **kw: TrainConfig(lr=args.lr, seed=seed, device="cpu", **kw)  # noqa: E731
    train_sources(zoo, files, args, cfg, log)
    for f in targets:
        todo = [(n, s) for n in shots for s in seeds if (f.stem, n, s) not in done]
        if not todo:
            continue
        others = [f"src-{g.stem}" for g in files if g != f]
        t0 = time.perf_counter()
        with quiet():
            hrec = train_hyper(zoo, TrainConfig(epochs=args.hyper_epochs, lr=args.hyper_lr, seed=0, device="cpu"),
                               tasks=others, spec=HyperSpec(()), max_length=64)
        hyper_seconds = time.perf_counter() - t0
        log(f"hypernetwork without {f.stem}: {hrec.steps} steps, {hyper_seconds:.0f} s, "
            f"{hrec.parameters['hypernetwork']} parameters")
        for n, seed in todo:
            pool, held, test = splits(f, work / "splits", n, seed)
            data = DataArgs(data=str(pool), eval_data=str(held), columns=Columns(), shots=n, seed=seed)
            name = f"{f.stem}-{n}-s{seed}"
            rec = {"settings": settings, "target": f.stem, "shots": n, "seed": seed, "test": {}, "seconds": {},
                   "parameters": {"hyper": hrec.parameters["hypernetwork"],
                                  "one_expert": hrec.parameters["one_expert"]},
                   "hyper_train_seconds": round(hyper_seconds, 1), "generated_eval": {}}
            with quiet():
                t0 = time.perf_counter()
                own = train_task(zoo, name, data, cfg(seed, epochs=args.epochs), max_length=64, fisher_samples=128)
                rec["seconds"]["own"] = round(time.perf_counter() - t0, 1)
                rec["test"]["own"] = evaluate_task(zoo, name, data=str(test)).accuracy
                t0 = time.perf_counter()
                pi = interpolate_task(zoo, name, cfg(seed, epochs=args.epochs), k=2, spec=MixSpec(mode="full"),
                                      name=f"{name}-pi", embed=False, keep_best=False)
                rec["seconds"]["pi-full-k2"] = round(time.perf_counter() - t0, 1)
                rec["test"]["pi-full-k2"] = evaluate_task(zoo, pi.name, data=str(test)).accuracy
                for method, tune in (("hyper-none", "none"), ("hyper-z", "task-embedding"), ("hyper-all", "all")):
                    t0 = time.perf_counter()
                    g = generate_task(zoo, f"{name}-{method}", data,
                                      TrainConfig(epochs=args.epochs, lr=args.tune_lr, seed=seed, device="cpu"),
                                      tune=tune, max_length=64, fisher_samples=128)
                    rec["seconds"][method] = round(time.perf_counter() - t0, 1)
                    rec["test"][method] = evaluate_task(zoo, g.name, data=str(test)).accuracy
                    rec["generated_eval"][method] = g.metrics["accuracy_generated"]
                    zoo.remove_task(g.name)
                for t in (pi.name, own.name):
                    zoo.remove_task(t)
            done[(f.stem, n, seed)] = rec
            append_record(path, rec)
            log(f"{name}: " + ", ".join(f"{m} {rec['test'][m]:.3f}" for m in METHODS))
            report()
    report()


def write(args, recs: list[dict], complete: bool, seconds: float) -> None:
    lines = [("" if complete else f"**Partial run** ({len(recs)} runs): ")
             + f"Head `{args.head}`; shots per class {args.shots}; seeds {args.seeds}; {args.epochs} epochs for the own "
             f"expert, π and hyper's tuning (lr {args.tune_lr}); the hypernetwork trained {args.hyper_epochs} epochs "
             f"(lr {args.hyper_lr}) over the other five tasks' data, never the target's. Test accuracy (mean ± sd "
             "over seeds) on a test split nothing was chosen on.", "",
             "| target | shots | " + " | ".join(METHODS) + " |", "| --- | --- |" + " --- |" * len(METHODS)]
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        groups.setdefault((r["target"], r["shots"]), []).append(r)
    for (t, n), rs in groups.items():
        cells = []
        for m in METHODS:
            xs = [r["test"][m] for r in rs]
            cells.append(f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}")
        lines.append(f"| {t} | {n} | " + " | ".join(cells) + " |")
    lines.append("| **all** | | " + " | ".join(f"**{statistics.mean(r['test'][m] for r in recs):.3f}**"
                                               for m in METHODS) + " |")
    p = recs[0]["parameters"]
    lines += ["", "| method | trained parameters | mean seconds per target |", "| --- | --- | --- |"]
    for m in METHODS:
        trained = {"own": p["one_expert"], "pi-full-k2": f"3 × {p['one_expert']} + α",
                   "hyper-none": "0 (the shared hypernetwork)", "hyper-z": "32 (z)",
                   "hyper-all": f"{p['hyper']} + 32"}[m]
        lines.append(f"| {m} | {trained} | {statistics.mean(r['seconds'][m] for r in recs):.1f} |")
    lines += ["", f"The hypernetwork: {p['hyper']} parameters, against {p['one_expert']} for one expert "
              f"({p['hyper'] / p['one_expert']:.1f} experts' worth); trained in "
              f"{statistics.mean(r['hyper_train_seconds'] for r in recs):.0f} s per leave-one-out fit. "
              f"Wall time of the invocation that wrote this: {seconds:.0f} s."]
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    from _common import put_block

    put_block("hyper", "HyperPELT on the packaged tasks", "hyper.py", table)


if __name__ == "__main__":
    main()
