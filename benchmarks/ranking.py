"""The predict half of predict-then-interpolate, measured: which score of a source says best whether
it will help a target?

For every packaged target, shot count and seed of benchmarks/transfer.py (the same source zoo: one
expert per other task on its whole pool; the same few-shot splits), each source is scored by

  fisher-cosine       cosine of the Fisher at the target's own expert and at the source's (recorded
                      by transfer.py, as `pizoo similar NAME` ranks by default before this work)
  fisher-normalized   the same, the π-Tuning code's per-tensor normalised similarity
  probe-cosine        cosine of the Fisher at the zoo's shared probe, the target's from its shots alone
                      (`similar --data` before this work)
  probe-normalized    the same, normalised
  probe-centred       the probe cosine after the zoo mean is taken away (pizoo.index: the sketches)
  fit                 the source expert's fit to the target's training shots: the mean log-likelihood
                      of the gold labels after one temperature per expert (pizoo.predict; the default)
  fit-raw             the same at the expert's own temperature
  fit-accuracy        the source expert's accuracy on the shots
  both                the order `--by both` gives here (every source is recalled): the sources whose fit
                      beats the base model's beyond noise, by fit, then the others by the probe Fisher

and set against the gain that transfer.py measured for the same (target, source, shots, seed):
the accuracy of interpolating the target's expert with that source alone (k = 1, mode alpha) minus
the own expert's, on a test split nothing was chosen on. In this six-task zoo `--by both` (the
embedding recalls R = 100, the fit orders them) is `fit`: every source is recalled.

Reported per score: Spearman ρ with the gain over every pair (pooled) and within each run (mean),
the mean gain of the source each score puts first (what choosing by it buys), the same-family share
of its top 2, hubness (the largest count of runs in which one source is first), and its cost.

    .venv/bin/python benchmarks/ranking.py [--shots 16,64] [--seeds 0,1,2] [--report-only]

Records go to benchmarks/results/ranking-runs.jsonl (a rerun resumes); the table goes into
BENCHMARKS.md between the ranking markers. The gains are read from
benchmarks/results/transfer-runs.jsonl; the source experts are retrained (cached in
benchmarks/.cache) with the settings recorded there, and the check below compares what can be
recomputed (the source experts' fit is deterministic given the seed) with nothing assumed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "demo"))

from _common import load_records, put_block, tmpdir  # noqa: E402
from transfer import FAMILY, columns, quiet, source_zoo, train_sources  # noqa: E402

SCORES = ("fisher-cosine", "fisher-normalized", "probe-cosine", "probe-normalized", "probe-centred", "fit",
          "fit-raw", "fit-accuracy", "both")
TASKS = {"text": ("bbc-topic", "clothing-department", "clothing-rating", "clothing-recommended", "rt-sentiment",
                  "rt-subjectivity"),
         "image": ("digits-8x8", "fashion-type", "mnist-3v8", "mnist-digit", "mnist-high", "mnist-parity")}
# the settings transfer.py measured the gains with (its image runs trained 8 epochs, not 15)
TRANSFER_SETTINGS = {"text": {"epochs": 15, "source_epochs": 5, "lr": 0.002, "k": 2, "corr_steps": 15, "head": "match"},
                     "image": {"epochs": 8, "source_epochs": 5, "lr": 0.002, "k": 2, "corr_steps": 15, "head": "match",
                               "modality": "image"}}


def gains_of(records_path: Path, sources_all: list[str], modality: str) -> dict:
    """(target, shots, seed) -> {source task: (gain, fisher cosine, fisher normalized)} from transfer.py's records."""
    out = {}
    for line in records_path.read_text().splitlines():
        rec = json.loads(line)
        want = {**TRANSFER_SETTINGS[modality], "sources": sources_all}
        if rec["settings"] != want or "sims" not in rec:
            continue
        by_sims = {tuple(v): s for s, v in rec["sims"].items()}
        pairs = {}
        for cos, nor, gain in rec["pairs"]:
            src = by_sims[(cos, nor)]
            pairs[src.removeprefix("src-")] = (gain, cos, nor)
        out[(rec["target"], rec["shots"], rec["seed"])] = pairs
    return out


def measure(zoo, f, shots: int, seed: int, sources: list[str], modality: str) -> dict:
    """Every probe and fit score of every source for one run (no training)."""
    from pizoo.choose import compare
    from pizoo.embed import load_embedding
    from pizoo.fisher import choose, probe_fisher
    from pizoo.index import Index, centred_scores, sketch, sketches_of
    from pizoo.interpolate import load_expert_part
    from pizoo.models import ExpertModel
    from pizoo.predict import base_fit, candidate, fit_scores, order
    from pizoo.similarity import similarity
    from pizoo.tasks import DataArgs
    from pizoo.zoo import FISHER

    td = DataArgs(data=str(f), columns=columns(argparse.Namespace(modality=modality)), shots=shots, seed=seed).prepare()
    em = ExpertModel(zoo.spec, td.labels, max_length=64)
    rows = em.encode(td.train, td.label_ids(td.train))
    t0 = time.perf_counter()
    with quiet():
        vec = {n: t.numpy() for n, t in probe_fisher(em, choose(rows, 128, seed)).items()}
    probe_seconds = time.perf_counter() - t0
    names = [f"src-{s}" for s in sources]
    t0 = time.perf_counter()
    probes = {n: load_embedding(zoo, n, "probe") for n in names}
    idx = Index.empty()
    for n in names:
        idx = idx.with_task(n, "", sketches_of(zoo.task_dir(n) / FISHER))
    arr = idx.arrays["probe/cosine"]
    centred = centred_scores(arr, idx.means["probe/cosine"], sketch(vec)["cosine"])
    rank_seconds = time.perf_counter() - t0
    out = {s: {"probe-cosine": similarity(vec, probes[n], "cosine"),
               "probe-normalized": similarity(vec, probes[n], "normalized"),
               "probe-centred": float(centred[idx.row[n]])} for s, n in zip(sources, names)}
    fit_seconds, fits = {}, {}
    base = base_fit(em, rows)
    for s, n in zip(sources, names):
        t0 = time.perf_counter()
        fit = fits[s] = fit_scores(em, rows, {n: load_expert_part(zoo, n, em)})[n]
        fit_seconds[s] = time.perf_counter() - t0
        out[s].update({"fit": fit.calibrated_log_likelihood, "fit-raw": fit.log_likelihood,
                       "fit-accuracy": fit.accuracy, "temperature": fit.temperature,
                       "beats_base": compare(fit, base) > 0})
    # `both` as pizoo.predict.order gives it (the tie rule needs the per-example fits, not recorded)
    both = order([candidate(s, out[s]["probe-cosine"], fits[s], base, len(rows)) for s in sources], fits)
    return {"scores": out, "n_train": len(rows), "both": [c.task for c in both],
            "seconds": {"probe_fisher": probe_seconds, "probe_rank": rank_seconds,
                        "fit_per_candidate": statistics.mean(fit_seconds.values())}}


def check_sources(zoo, f, records_path: Path, modality: str) -> str:
    """Are the retrained sources those the recorded gains were measured with? Retrain one target's
    own expert as transfer.py did and compare its Fisher similarity to every source with the record."""
    from pizoo.embed import load_embedding
    from pizoo.similarity import similarity
    from pizoo.tasks import DataArgs, train_task
    from pizoo.train import TrainConfig

    rec = next(json.loads(line) for line in records_path.read_text().splitlines()
               if json.loads(line)["target"] == f.stem and json.loads(line)["shots"] == 16
               and json.loads(line)["seed"] == 0 and json.loads(line)["settings"].get("head") == "match"
               and json.loads(line)["settings"].get("modality", "text") == modality and "sims" in json.loads(line))
    epochs = TRANSFER_SETTINGS[modality]["epochs"]
    name = f"{f.stem}-16-s0-check"
    if zoo.has_task(name):
        zoo.remove_task(name)
    with quiet():
        train_task(zoo, name, DataArgs(data=str(f), columns=columns(argparse.Namespace(modality=modality)), shots=16,
                                       seed=0), TrainConfig(lr=2e-3, seed=0, device="cpu", epochs=epochs), max_length=64,
                   fisher_samples=128)
    vec = load_embedding(zoo, name)
    diff = max(abs(similarity(vec, load_embedding(zoo, s), "cosine") - v[0]) for s, v in rec["sims"].items())
    zoo.remove_task(name)
    return (f"Check: {f.stem}'s 16-shot seed-0 expert retrained as transfer.py trains it; its Fisher cosine to "
            f"each retrained source differs from the recorded one by at most {diff:.1e}.")


def _value(score: str, rec: dict, g: dict, s: str) -> float:
    """A source's value under a score (higher ranks first). `both` is the order `--by both` gives in
    this zoo (every source recalled), as pizoo.predict.order gave it when the run was measured: the
    sources whose fit beats the base model's beyond noise, by fit (near-ties by the embedding), then
    the others by the probe Fisher."""
    if score.startswith("fisher"):
        return g[s][1 if score == "fisher-cosine" else 2]
    if score == "both":
        return -rec["both"].index(s)
    return rec["scores"][s][score]


def report(args, runs: dict, gains: dict) -> str:
    from scipy.stats import spearmanr

    lines = [f"{args.modality.capitalize()} targets: the six packaged tasks; shots {args.shots}; seeds {args.seeds}. Gains: single-source "
             "interpolation (k = 1, mode alpha, 15 steps) minus the own expert, on the test split, from "
             "benchmarks/results/transfer-runs.jsonl. ρ pooled: Spearman over every (run, source) pair; ρ within: "
             "the mean over runs of the Spearman over that run's five sources; gain of top-1: the mean gain of the "
             "source the score ranks first; family@2: the share of the top 2 of the target's own family (out of "
             "min(2, family members), targets alone in their family left out); hub: the largest number of runs "
             "one source is ranked first in.", ""]
    for shots in [*args.shots, "all"] if len(args.shots) > 1 else args.shots:
        keys = [k for k in runs if shots == "all" or k[1] == shots]
        if not keys:
            continue
        lines += [f"**{shots} shots** ({len(keys)} runs)" if shots != "all" else f"**all** ({len(keys)} runs)", "",
                  "| score | ρ pooled | ρ within | gain of top-1 | family@2 | hub (runs first) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        oracle = statistics.mean(max(g[0] for g in gains[k].values()) for k in keys)
        for score in SCORES:
            xs, ys, within, top1_gain, fam, firsts = [], [], [], [], [], {}
            for k in keys:
                g = gains[k]
                srcs = sorted(g)
                vals = [_value(score, runs[k], g, s) for s in srcs]
                gs = [g[s][0] for s in srcs]
                xs += vals
                ys += gs
                if len(set(vals)) > 1 and len(set(gs)) > 1:
                    within.append(spearmanr(vals, gs)[0])
                order = [s for _, s in sorted(zip(vals, srcs), key=lambda t: -t[0])]
                top1_gain.append(g[order[0]][0])
                firsts[order[0]] = firsts.get(order[0], 0) + 1
                family = FAMILY[k[0]]
                peers = [t for t in srcs if FAMILY.get(t) == family]
                if peers:
                    fam.append(sum(FAMILY.get(s) == family for s in order[:2]) / min(2, len(peers)))
            hub = max(firsts.items(), key=lambda kv: kv[1])
            lines.append(f"| {score} | {spearmanr(xs, ys)[0]:+.3f} | {statistics.mean(within):+.3f} | "
                         f"{statistics.mean(top1_gain):+.4f} | {statistics.mean(fam):.3f} | {hub[0]} {hub[1]} of {len(keys)} |")
        lines += [f"| *best source per run (oracle)* | | | {oracle:+.4f} | | |", ""]
    secs = [r["seconds"] for r in runs.values()]
    model = "pizoo:multimodal (DINOv2-small + MiniLM)" if args.modality == "image" else "MiniLM, max length 64"
    lines += [f"Cost per run (2 CPU cores, {model}): probe Fisher of the target's shots "
              f"{statistics.mean(s['probe_fisher'] for s in secs):.1f} s (up to 128 examples), then ranking by it "
              f"{statistics.mean(s['probe_rank'] for s in secs) * 1000:.0f} ms; fit "
              f"{statistics.mean(s['fit_per_candidate'] for s in secs):.2f} s per candidate on the target's "
              f"{min(r['n_train'] for r in runs.values())}–{max(r['n_train'] for r in runs.values())} training "
              "examples (forward passes only). The expert Fisher needs the target's own expert trained first.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shots", default="16,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--modality", default="text", choices=("text", "image"),
                    help="image: the image tasks of zoo/image-recipes on pizoo:multimodal (gains from transfer.py's "
                    "--modality image runs, 16 shots)")
    ap.add_argument("--records", default=None, help="[default: benchmarks/results/ranking-runs[-image].jsonl]")
    ap.add_argument("--transfer-records", default=str(ROOT / "benchmarks" / "results" / "transfer-runs.jsonl"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    args.shots = [int(s) for s in args.shots.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    image = args.modality == "image"
    args.records = args.records or str(ROOT / "benchmarks" / "results" / f"ranking-runs{'-image' if image else ''}.jsonl")
    sources_all = sorted(TASKS[args.modality])
    gains = gains_of(Path(args.transfer_records), sources_all, args.modality)
    records = Path(args.records)
    runs = load_records(records, ("target", "shots", "seed"))
    wanted = [(t, n, s) for t in sources_all for n in args.shots for s in args.seeds if (t, n, s) in gains]
    if not args.report_only:
        import prepare

        from pizoo.tasks import init_zoo
        from pizoo.train import TrainConfig

        start = time.perf_counter()
        with quiet():
            files = {f.stem: f for f in (prepare.main_images if image else prepare.main)(str(tmpdir() / "data"))}
        src_args = argparse.Namespace(head="match", source_epochs=5, lr=2e-3, modality=args.modality)
        zoo = source_zoo(src_args, init_zoo)
        cfg = lambda seed, **kw: TrainConfig(lr=2e-3, seed=seed, device="cpu", **kw)  # noqa: E731
        train_sources(zoo, list(files.values()), src_args, cfg, print)
        check = check_sources(zoo, files[sources_all[0]], Path(args.transfer_records), args.modality)
        print(check, file=sys.stderr, flush=True)
        Path(args.records).with_suffix(".check.txt").write_text(check + "\n")
        for key in wanted:
            if key in runs and "both" in runs[key]:
                continue  # measured (records from before the tie rule carry no `both` order: remeasured)
            target, shots, seed = key
            rec = {"target": target, "shots": shots, "seed": seed,
                   **measure(zoo, files[target], shots, seed, [s for s in sources_all if s != target], args.modality)}
            runs[key] = rec
            tmp = records.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in runs.values()))
            tmp.replace(records)
            best = max(rec["scores"], key=lambda s: rec["scores"][s]["fit"])
            print(f"[{time.perf_counter() - start:5.0f}s] {target} {shots} shots seed {seed}: fit first {best} "
                  f"(gain {gains[key][best][0]:+.3f}; best gain {max(g[0] for g in gains[key].values()):+.3f})",
                  file=sys.stderr, flush=True)
    have = {k: runs[k] for k in wanted if k in runs}
    table = report(args, have, gains)
    check_file = Path(args.records).with_suffix(".check.txt")
    if check_file.exists():
        table += "\n" + check_file.read_text().strip() + "\n"
    print(table)
    if not args.no_write:
        if image:
            put_block("ranking-image", "Predicting which source helps, on images (ranking)", "ranking.py", table)
        else:
            put_block("ranking", "Predicting which source helps (ranking)", "ranking.py", table)

if __name__ == "__main__":
    main()
