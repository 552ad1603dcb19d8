"""The two-stage ranking in a zoo of 10,000 tasks: do the real packaged experts of a target's family
still come first, and how long does `pizoo similar --data` take?

The zoo: the six real source experts of benchmarks/ranking.py (one per packaged text task, trained
on its whole pool; benchmarks/.cache) and N distractor tasks, written as pizoo writes tasks. Half
the distractors are benchmarks/scale.py's synthetic Fisher families (squared Gaussians times
log-normal noise); the other half are look-alikes: a real source's Fisher times log-normal noise
(σ = 1), so that the embedding alone has near neighbours of every real task to get wrong. Their
experts are random tensors of the real shapes (20 distinct ones, hard-linked): they are not tasks,
so no distractor should fit.

For every packaged task as a new target (its 16-shot seed-0 training split, written as a csv, as a
user brings new data), the real command a user runs, in a fresh process, timed whole (model load,
probe Fisher of the data, recall from the index, fit of the R recalled experts):

    pizoo similar --data target.csv --k 4 --json [--by fisher|both] [--metric cosine|centred]

recall@4 = the share of the real tasks of the target's family (its own full-pool expert included:
it is in the zoo) that the top 4 holds.

    .venv/bin/python benchmarks/ranking_scale.py [--tasks 10000] [--recall 100]

--against DIR[,DIR...] times the default command (--by both, k 4) of other checkouts of pizoo (git
worktrees of earlier commits) against this one, on the same zoo, the versions in turn for every target
and every repeat, so that a slower or faster machine moves them all alike: the ratio is this
checkout's wall time over each other's.

    git worktree add --detach /tmp/old a3e8ea3
    .venv/bin/python benchmarks/ranking_scale.py --keep --against /tmp/old [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "demo"))

from _common import put_block  # noqa: E402
from transfer import FAMILY, quiet, source_zoo  # noqa: E402

TEXT = ("bbc-topic", "clothing-department", "clothing-rating", "clothing-recommended", "rt-sentiment",
        "rt-subjectivity")


def build(src_root: Path, root: Path, n: int, seed: int = 0) -> None:
    from safetensors.numpy import load_file, save_file

    from pizoo.config import SCHEMA_VERSION, TaskManifest
    from pizoo.index import INDEX
    from pizoo.zoo import EXPERT, FISHER, MANIFEST, Zoo, atomic_write, sha256_file

    shutil.copytree(src_root, root)
    rng = np.random.default_rng(seed)
    real = {}
    for t in TEXT:
        with h5py.File(root / f"src-{t}" / FISHER, "r") as f:
            attrs = dict(f.attrs)
            real[t] = {g: {k: np.asarray(v[()]) for k, v in f[g].items()} for g in ("expert", "probe")}
    template = load_file(str(root / f"src-{TEXT[0]}" / EXPERT))
    experts = []
    for j in range(20):
        p = root / f".distractor-expert-{j}.safetensors"
        save_file({k: (rng.standard_normal(v.shape) * float(v.std() or 0.01)).astype(np.float32)
                   for k, v in template.items()}, str(p))
        experts.append((p, sha256_file(p)))
    families = [{g: {k: rng.standard_normal(v.shape).astype(np.float32) ** 2 for k, v in real[TEXT[0]][g].items()}
                 for g in ("expert", "probe")} for _ in range(max(2, n // 20))]
    for i in range(n):
        name = f"distractor-{i:05d}"
        d = root / name
        d.mkdir()
        like = real[TEXT[i % len(TEXT)]] if i % 2 else families[i % len(families)]
        with h5py.File(d / FISHER, "w") as f:
            for k, v in attrs.items():
                f.attrs[k] = v
            for group in ("expert", "probe"):
                g = f.create_group(group)
                for k, base in like[group].items():
                    g.create_dataset(k, data=(base * rng.lognormal(0.0, 1.0, base.shape)).astype(np.float32))
        path, sha = experts[i % len(experts)]
        os.link(path, d / EXPERT)
        m = TaskManifest(name=name, labels=("negative", "positive"), source={"distractor": True},
                         files={EXPERT: sha, FISHER: sha256_file(d / FISHER)}, metrics={},
                         provenance={"how": "benchmark distractor"}, schema_version=SCHEMA_VERSION)
        (d / MANIFEST).write_text(m.to_json())
    for p, _ in experts:
        p.unlink()
    zoo = Zoo(root)
    atomic_write(root / INDEX, zoo.build_index().covering(zoo.task_names()).write)


def target_csv(f: Path, out: Path) -> Path:
    from pizoo.data import Columns
    from pizoo.tasks import DataArgs

    td = DataArgs(data=str(f), columns=Columns(), shots=16, seed=0).prepare()
    import pandas as pd

    pd.DataFrame({"text": list(td.train.texts), "label": list(td.train.labels)}).to_csv(out, index=False)
    return out


def similar(root: Path, csv: Path, by: str, metric: str, k: int, recall: int, code: Path | None = None
            ) -> tuple[list[str], float]:
    """The top 4 of `pizoo similar --data csv` in a fresh process (pizoo from `code`, a checkout; None:
    this one) and its wall time."""
    cmd = [sys.executable, "-m", "pizoo", "--zoo", str(root), "similar", "--data", str(csv), "--k", str(k),
           "--by", by, "--metric", metric, "--recall", str(recall), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"PYTHONPATH": str(code)} if code else {})}
    t0 = time.perf_counter()  # run in the checkout: `python -m` puts the working directory first on the path
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(code or ROOT))
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
    return [json.loads(line)["task"] for line in r.stdout.splitlines()][:4], wall


def paired(args, root: Path, targets: dict[str, Path]) -> str:
    """This checkout's default ranking against other checkouts', in turn on every target: the table."""
    codes = [None] + [Path(d).resolve() for d in args.against.split(",")]
    label = lambda c: "this" if c is None else subprocess.run(  # noqa: E731
        ["git", "-C", str(c), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    walls = {(t, c): [] for t in targets for c in codes}
    got = {}
    for t, csv in targets.items():
        family = {f"src-{u}" for u in TEXT if FAMILY[u] == FAMILY[t]}
        for rep in range(args.repeats):
            for c in codes if rep % 2 == 0 else codes[::-1]:
                top, wall = similar(root, csv, "both", "cosine", 4, args.recall, c)
                walls[(t, c)].append(wall)
                got[(t, c)] = len(family & set(top)) / len(family)
                print(f"  {t} {label(c)}: recall@4 {got[(t, c)]:.2f} in {wall:.1f} s", file=sys.stderr, flush=True)
    med = {key: statistics.median(w) for key, w in walls.items()}
    names = [label(c) for c in codes]
    lines = [f"`similar --data T.csv --k 4` (--by both, R = {args.recall}) in the zoo of {args.tasks:,} distractors, "
             f"this checkout against {', '.join(names[1:])}, in turn on every target ({args.repeats} each, median): "
             "wall seconds of the whole command in a fresh process, recall@4 of the family, and the ratio of this "
             "checkout's time to each other's.", "",
             "| target | " + " | ".join(f"{n}: s (recall@4)" for n in names) + " | " +
             " | ".join(f"this / {n}" for n in names[1:]) + " |", "| --- " * (2 * len(codes)) + "|"]
    for t in targets:
        lines.append(f"| {t} | " + " | ".join(f"{med[(t, c)]:.1f} ({got[(t, c)]:.2f})" for c in codes) + " | " +
                     " | ".join(f"{med[(t, None)] / med[(t, c)]:.2f}" for c in codes[1:]) + " |")
    lines.append("| median | " + " | ".join(f"{statistics.median(med[(t, c)] for t in targets):.1f}" for c in codes)
                 + " | " + " | ".join(f"{statistics.median(med[(t, None)] / med[(t, c)] for t in targets):.2f}"
                                      for c in codes[1:]) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--recall", type=int, default=100)
    ap.add_argument("--out", default="/tmp/pizoo-rank-scale")
    ap.add_argument("--keep", action="store_true", help="reuse a zoo built by an earlier --keep run")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--against", default=None, help="other checkouts of pizoo to time the default ranking against")
    ap.add_argument("--repeats", type=int, default=1, help="with --against: runs of each version on each target")
    args = ap.parse_args()
    import prepare

    from pizoo.tasks import init_zoo

    out = Path(args.out)
    root = out / f"zoo-{args.tasks}"
    src = source_zoo(argparse.Namespace(head="match", source_epochs=5, lr=2e-3, modality="text"), init_zoo)
    missing = [t for t in TEXT if not src.has_task(f"src-{t}")]
    if missing:
        sys.exit(f"the source zoo {src.root} lacks {missing}: run benchmarks/ranking.py first (it trains them)")
    start = time.perf_counter()
    if not (args.keep and (root / "index.h5").is_file()):
        shutil.rmtree(root, ignore_errors=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        build(src.root, root, args.tasks)
    built = time.perf_counter() - start
    print(f"zoo of {args.tasks + len(TEXT)} tasks in {built:.0f} s", file=sys.stderr, flush=True)
    with quiet():
        files = {f.stem: f for f in prepare.main(str(out / "data"))}
    if args.against:
        table = paired(args, root, {t: target_csv(files[t], out / f"{t}-16.csv") for t in TEXT})
        print(table)
        if not args.no_write:
            put_block("ranking-scale-paired", "The ranking at 10,000 tasks, version against version",
                      "ranking_scale.py", table)
        return
    # (by, metric, k asked): --k R keeps every recalled candidate for the full fit, i.e. no race
    # (pizoo.predict.fit_stage keeps max(RACE_KEEP, k)); its top 4 is the same command's first 4 rows
    settings = (("both", "cosine", 4), ("both", "cosine", args.recall), ("fisher", "cosine", 4),
                ("fisher", "centred", 4))
    rows = {s: [] for s in settings}
    for t in TEXT:
        csv = target_csv(files[t], out / f"{t}-16.csv")
        family = {f"src-{u}" for u in TEXT if FAMILY[u] == FAMILY[t]}
        for by, metric, k in settings:
            top, wall = similar(root, csv, by, metric, k, args.recall)
            got = len(family & set(top)) / len(family)
            rows[(by, metric, k)].append((t, got, wall, top))
            print(f"  {t} --by {by} --metric {metric} --k {k}: recall@4 {got:.2f} in {wall:.1f} s: {', '.join(top)}",
                  file=sys.stderr, flush=True)
    lines = [f"A zoo of {args.tasks:,} distractors and the 6 real source experts ({args.tasks // 2:,} synthetic "
             f"Fisher families, {args.tasks - args.tasks // 2:,} look-alikes of the real tasks' Fisher; random "
             f"experts); R = {args.recall}; each target's 16-shot seed-0 training split as new data. Wall time of the "
             "whole command in a fresh process on 2 CPU cores (model load included), median over the six targets. "
             "The fit stage of `both` races (pizoo.predict, successive halving: all R experts on 8 of the "
             "target's examples cut to 64 tokens (the heats); 8 of them, half nominated by the embedding and half "
             "by the heats, on 32 whole examples; the "
             f"best 4 of those on all of them); `--k {args.recall}` keeps all R for the full fit, as before the race. "
             "Scoring batches rows of like length (pizoo.models.length_batches).",
             "", "| --by | --metric | fit stage | recall@4 of the family (mean) | targets with every family task in "
             "the top 4 | wall s (median, max) |", "| --- | --- | --- | --- | --- | --- |"]
    for (by, metric, k), rs in rows.items():
        stage = "–" if by == "fisher" else "raced" if k < args.recall else f"all {args.recall} on every example"
        lines.append(f"| {by} | {metric} | {stage} | {statistics.mean(r[1] for r in rs):.2f} | "
                     f"{sum(r[1] == 1.0 for r in rs)} of {len(rs)} | "
                     f"{statistics.median(r[2] for r in rs):.1f}, {max(r[2] for r in rs):.1f} |")
    lines += ["", "Top 4 with `--by both --metric cosine` (the default): " + "; ".join(
        f"{t}: {', '.join(x.removeprefix('src-') for x in top)}" for t, _, _, top in rows[("both", "cosine", 4)]),
        "", f"Zoo built in {built:.0f} s." if built >= 1 else "Zoo reused from an earlier --keep run (its build: "
        "writing 10,006 task folders and the index, about 3 min)."]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        put_block("ranking-scale", "Predicting which source helps, in a zoo of 10,000 tasks", "ranking_scale.py", table)


if __name__ == "__main__":
    main()
