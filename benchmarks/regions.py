"""Crop against blur: the two ways the image tower can see a box candidate (ReCLIP, Subramanian et
al. 2022: the box alone, or the whole image blurred outside the box), on the RefCOCO-like scenes of
demo/scenes.py (ref, ref-plus, ref-g).

For every target, seed and region, a zoo on pizoo:multimodal with that `region` head option and the
same split of the target's data:
  base  the base model alone, no expert (zero-shot)
  own   the target's LoRA expert trained on its shots
Accuracy on the target's held-out split; the difference blur - crop is taken per run (same split,
same seed, same training), so it is paired.

    .venv/bin/python benchmarks/regions.py [--shots 16] [--seeds 0,1,2] [--epochs 8]

Every finished run is appended to benchmarks/results/regions-runs.jsonl; a rerun measures only the
runs it lacks; --report-only tabulates the record file. The table goes into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from _common import append_record, load_records, put_block, tmpdir
from refer import family_files, quiet

REGIONS = ("crop", "blur")


def run_one(work: Path, files, target: str, region: str, n: int, seed: int, args) -> dict:
    from pizoo.builtin import ALIAS
    from pizoo.tasks import DataArgs, init_zoo, train_task
    from pizoo.train import TrainConfig

    path, cols = files[target]
    zoo = init_zoo(work / f"zoo-{target}-{region}-{n}-s{seed}", base_model=ALIAS, kind="lora", head="match",
                   head_options={"region": region})
    t0 = time.perf_counter()
    with quiet():
        m = train_task(zoo, f"{target}-{n}-s{seed}", DataArgs(data=str(path), columns=cols, shots=n, seed=seed),
                       TrainConfig(lr=args.lr, epochs=args.epochs, seed=seed, device="cpu"), max_length=64,
                       embed=False)
    return {"target": target, "region": region, "shots": n, "seed": seed,
            "base": m.metrics["accuracy_zero_shot"], "own": m.metrics["accuracy"], "n_eval": m.metrics["n_eval"],
            "seconds": round(time.perf_counter() - t0, 1)}


def table(args, recs: list[dict], total: int) -> str:
    from scipy.stats import binomtest

    by = {(r["target"], r["shots"], r["seed"], r["region"]): r for r in recs}
    lines = [(f"**Partial run** ({len(recs)} of {total} runs): " if len(recs) < total else "")
             + f"LoRA, {args.epochs} epochs, lr {args.lr}; the same split and seed for both regions. Accuracy on "
             "each target's held-out split, mean over seeds (n seeds).", "",
             "| target | shots | base, crop | base, blur | own, crop | own, blur | own: blur - crop (points) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    diffs = []
    for target, n in sorted({(r["target"], r["shots"]) for r in recs}):
        pairs = [(by[(target, n, s, "crop")], by[(target, n, s, "blur")]) for s in sorted({r["seed"] for r in recs})
                 if (target, n, s, "crop") in by and (target, n, s, "blur") in by]
        if not pairs:
            continue
        mean = lambda region, m: statistics.mean(p[REGIONS.index(region)][m] for p in pairs)
        d = [b["own"] - c["own"] for c, b in pairs]
        diffs += d
        lines.append(f"| {target} | {n} | {mean('crop', 'base'):.3f} | {mean('blur', 'base'):.3f} | "
                     f"{mean('crop', 'own'):.3f} | {mean('blur', 'own'):.3f} | {100 * statistics.mean(d):+.2f} "
                     f"({len(pairs)}) |")
    if diffs:
        w, l_ = sum(x > 1e-9 for x in diffs), sum(x < -1e-9 for x in diffs)
        p = binomtest(w, w + l_).pvalue if w + l_ else 1.0
        lines += ["", f"Own expert, blur against crop over {len(diffs)} paired runs: mean {100 * statistics.mean(diffs):+.2f} "
                  f"points, blur better / tied / worse {w} / {len(diffs) - w - l_} / {l_}, sign test p {p:.3f}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shots", default="16")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--targets", default=None, help="comma list [default: ref, ref-plus, ref-g]")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=None, help="default: LoRA's own")
    ap.add_argument("--records", default=str(ROOT / "benchmarks" / "results" / "regions-runs.jsonl"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if args.lr is None:
        from pizoo.experts import get_kind

        args.lr = get_kind("lora").default_lr
    shots, seeds = [int(s) for s in args.shots.split(",")], [int(s) for s in args.seeds.split(",")]
    settings = {"epochs": args.epochs, "lr": args.lr}
    records = Path(args.records)
    done = load_records(records, ("target", "shots", "seed", "region"), settings)
    work = tmpdir()
    files = family_files("ref", work / "data")
    targets = [t for t in files if not args.targets or t in args.targets.split(",")]
    wanted = [(t, n, s, r) for s in seeds for t in targets for n in shots for r in REGIONS]
    start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - start:6.0f}s] {msg}", file=sys.stderr, flush=True)
    log(f"{sum(w in done for w in wanted)} of {len(wanted)} runs already in {records}")
    if not args.report_only:
        for key in (w for w in wanted if w not in done):
            rec = {"settings": settings, **run_one(work, files, key[0], key[3], key[1], key[2], args)}
            log(f"{key[0]} {key[1]} shots seed {key[2]} {key[3]}: base {rec['base']:.3f} own {rec['own']:.3f} "
                f"({rec['seconds']} s)")
            done[key] = rec
            append_record(records, rec)
    recs = [done[w] for w in wanted if w in done]
    if not recs:
        sys.exit(f"no runs with these settings in {records}")
    text = table(args, recs, len(wanted)) + "\n\nCommand: `.venv/bin/python benchmarks/regions.py " + \
        " ".join(sys.argv[1:]).replace("--report-only", "").strip() + "`"
    print(text)
    if not args.no_write:
        put_block("regions", "Crop against blur", "regions.py", text)


if __name__ == "__main__":
    main()
