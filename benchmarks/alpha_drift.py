"""Where is α fitted in `--mode alpha`? On the training split (as mode full) or on held-out examples?

On its own few training examples the target's expert is near-perfect by construction, so α fitted
there learns mostly to weigh the target up: in the transfer runs α ended at a softmax weight of
0.82-0.84 for the target on every target, at Adam's step rate. `--alpha-on held-out` (the default
since issue 25) fits α on the eval split instead, two-fold, and judges the result out of fold.

Protocol (benchmarks/choose_k.py's splits): for every packaged text task as target, 16 shots per
class from its pool, seeds 0,1,2; the eval split holds 16 per class of the held-out part, the rest
is a test split nothing is chosen or fitted on. The target's expert is trained 15 epochs; its two
sources are the top 2 of the tool's ranking (`--by both`; never the target task's own full-pool
expert); then `interpolate --mode alpha --no-keep-best` once with `--alpha-on train` and once with
`--alpha-on held-out`, the same number of steps. Reported: test accuracy of the own expert and of
each, and the target's softmax weight at the end.

    .venv/bin/python benchmarks/alpha_drift.py [--shots 16] [--seeds 0,1,2] [--report-only]

Records: benchmarks/results/alpha-drift-runs.jsonl (a rerun resumes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "demo"))

from _common import append_record, load_records, put_block, tmpdir  # noqa: E402
from choose_k import splits  # noqa: E402
from transfer import quiet, source_zoo, train_sources  # noqa: E402

ON = ("train", "held-out")


def one_run(zoo, f: Path, work: Path, n: int, seed: int, cfg) -> dict:
    from pizoo.data import Columns
    from pizoo.evaluate import evaluate_task
    from pizoo.interpolate import choose_sources, interpolate_task
    from pizoo.mixture import MixSpec
    from pizoo.tasks import DataArgs, load_task_model, task_data, train_task

    pool, held, test = splits(f, work / "splits", n, seed)
    name = f"{f.stem}-{n}-s{seed}"
    with quiet():
        train_task(zoo, name, DataArgs(data=str(pool), eval_data=str(held), columns=Columns(), shots=n, seed=seed),
                   cfg(seed, epochs=15), max_length=64, fisher_samples=128)
        own = evaluate_task(zoo, name, data=str(test))
        em, manifest = load_task_model(zoo, name)
        td = task_data(zoo, name, manifest)
        ranked = [c.task for c in choose_sources(zoo, name, k=None, by="both", em=em,
                                                 rows=em.encode(td.train, td.label_ids(td.train)))]
    del em
    top = [s for s in ranked if s != f"src-{f.stem}"][:2]
    rec = {"target": f.stem, "shots": n, "seed": seed, "sources": top, "own": own.accuracy, "n_test": own.n}
    for on in ON:
        with quiet():
            r = interpolate_task(zoo, name, cfg(seed, epochs=15), with_=top, spec=MixSpec(mode="alpha"),
                                 name=f"{name}-{on}", embed=False, keep_best=False, alpha_on=on)
            acc = evaluate_task(zoo, r.name, data=str(test)).accuracy
        ip = r.provenance["interpolation"]
        rec[on] = {"test": acc, "target_weight": ip["alpha"]["expert"][0], "steps": ip["steps"],
                   "eval": r.metrics["accuracy_interpolated"]}
        zoo.remove_task(r.name)
    zoo.remove_task(name)
    return rec


def report(recs: list[dict]) -> str:
    from scipy.stats import binomtest

    lines = ["Text targets: the six packaged tasks, 16 shots per class, seeds 0,1,2 (choose_k.py's splits); "
             "two sources (the top 2 of `--by both`); `interpolate --mode alpha --no-keep-best`, 15 epochs, "
             "the same steps either way. Test accuracy on the test split nothing was fitted or chosen on; "
             "target weight: softmax(α) of the target's expert at the end.", "",
             "| target | own | α on train | α held-out | target weight (train) | target weight (held-out) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for t in sorted({r["target"] for r in recs}):
        rs = [r for r in recs if r["target"] == t]
        m = lambda f: statistics.mean(f(r) for r in rs)  # noqa: E731
        lines.append(f"| {t} | {m(lambda r: r['own']):.3f} | {m(lambda r: r['train']['test']):.3f} | "
                     f"{m(lambda r: r['held-out']['test']):.3f} | {m(lambda r: r['train']['target_weight']):.2f} | "
                     f"{m(lambda r: r['held-out']['target_weight']):.2f} |")
    m = lambda f: statistics.mean(f(r) for r in recs)  # noqa: E731
    lines.append(f"| **all** ({len(recs)} runs) | **{m(lambda r: r['own']):.3f}** | "
                 f"**{m(lambda r: r['train']['test']):.3f}** | **{m(lambda r: r['held-out']['test']):.3f}** | "
                 f"**{m(lambda r: r['train']['target_weight']):.2f}** | "
                 f"**{m(lambda r: r['held-out']['target_weight']):.2f}** |")
    d = [r["held-out"]["test"] - r["train"]["test"] for r in recs]
    w, l_ = sum(x > 1e-9 for x in d), sum(x < -1e-9 for x in d)
    p = binomtest(w, w + l_).pvalue if w + l_ else 1.0
    below = [r["held-out"]["test"] - r["own"] for r in recs]
    lines += ["", f"Held-out against train, per run: mean {statistics.mean(d):+.3f}, {w} better / "
              f"{len(d) - w - l_} equal / {l_} worse (sign test p {p:.3f}). Held-out against the own expert: "
              f"mean {statistics.mean(below):+.3f}, below it in {sum(x < -1e-9 for x in below)} of {len(recs)} runs "
              f"(on train: mean {statistics.mean(r['train']['test'] - r['own'] for r in recs):+.3f})."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shots", default="16")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--records", default=str(ROOT / "benchmarks" / "results" / "alpha-drift-runs.jsonl"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    shots = [int(s) for s in args.shots.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    records = Path(args.records)
    done = load_records(records, ("target", "shots", "seed"))
    if not args.report_only:
        import prepare

        from pizoo.tasks import init_zoo
        from pizoo.train import TrainConfig

        start = time.perf_counter()
        work = tmpdir()
        with quiet():
            files = prepare.main(str(work / "data"))
        src_args = argparse.Namespace(head="match", source_epochs=5, lr=2e-3, modality="text")
        zoo = source_zoo(src_args, init_zoo)
        cfg = lambda seed, **kw: TrainConfig(lr=2e-3, seed=seed, device="cpu", **kw)  # noqa: E731
        train_sources(zoo, files, src_args, cfg, print)
        for f in files:
            for n in shots:
                for seed in seeds:
                    if (f.stem, n, seed) in done:
                        continue
                    rec = one_run(zoo, f, work, n, seed, cfg)
                    done[(f.stem, n, seed)] = rec
                    append_record(records, rec)
                    print(f"[{time.perf_counter() - start:5.0f}s] {f.stem} {n} s{seed}: own {rec['own']:.3f} "
                          f"train {rec['train']['test']:.3f} (w {rec['train']['target_weight']:.2f}) held-out "
                          f"{rec['held-out']['test']:.3f} (w {rec['held-out']['target_weight']:.2f})",
                          file=sys.stderr, flush=True)
    recs = [r for k, r in done.items() if k[1] in shots and k[2] in seeds]
    table = report(recs)
    print(table)
    if not args.no_write:
        put_block("alpha-drift", "Where α is fitted in mode alpha (train split or held-out)", "alpha_drift.py", table)


if __name__ == "__main__":
    main()
