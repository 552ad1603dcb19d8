"""Scoring in batches of like length against scoring in the rows' order, side by side in one run.

Every no-gradient pass of pizoo (the fit stage of `similar`, eval, keep-best, the probes) goes through
ExpertModel.class_scores. Before, it cut the rows into batches of 64 in their own order, so every
row was padded to the longest of its batch; now the rows are sorted by length and a batch closes at
a budget of token positions (pizoo.models.length_batches). This script scores each packaged text
task's 16-shot training split (the rows the fit stage scores) and the multiple-choice tasks' both
ways, on the packaged MiniLM with the zoo's starting LoRA expert, alternating the ways so machine
noise falls on all of them, and prints the best of --rounds wall times as ratios to the old way,
with the largest difference in any score.

    python benchmarks/scoring_batches.py [--rounds 3] [--budgets 1024,2048,4096]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import torch
from _common import put_block, tmpdir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "demo"))


def task_rows(em_for, files):
    """(name, ExpertModel, rows) for each task file: its 16-shot seed-0 training split, encoded."""
    from pizoo.tasks import DataArgs

    out = []
    for f, columns in files:
        td = DataArgs(data=str(f), columns=columns, shots=16, seed=0).prepare()
        em = em_for(td)
        out.append((f.stem, em, em.encode(td.train, td.label_ids(td.train))))
    return out


def old_way(em, rows, batch_size: int = 64):
    """What class_scores did before: batches of 64 in the rows' order."""
    em.wrapped.eval()
    with torch.no_grad():
        return em.head_type.scores(em, [rows[i: i + batch_size] for i in range(0, len(rows), batch_size)], None).float().cpu()


def new_way(em, rows, tokens: int):
    from pizoo import models

    saved = models.TOKENS_PER_BATCH
    models.TOKENS_PER_BATCH = tokens
    try:
        return em.class_scores(rows)
    finally:
        models.TOKENS_PER_BATCH = saved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budgets", default="1024,2048,4096")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    import prepare

    from pizoo.data import Columns
    from pizoo import models
    from pizoo.models import ExpertModel, length_batches
    from pizoo.tasks import init_zoo

    data = tmpdir()
    with contextlib.redirect_stderr(io.StringIO()):
        files = [(p, Columns()) for p in prepare.main(str(data))]
        files += [(p, Columns(text="text", label="answer", choices="options")) for p in prepare.main_choices(str(data))]
    zoo = init_zoo(tmpdir() / "zoo")

    def em_for(td):
        return ExpertModel(zoo.spec, td.labels)

    tasks = task_rows(em_for, files)
    head = ["task", "rows", f"tokens (padded before → at the default ≤ {models.TOKENS_PER_BATCH})", "old: batches of 64 in order (s)"]
    head += [f"by length, ≤ {b} positions" for b in budgets] + ["largest score difference"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    totals = {b: 0.0 for b in ["old", *budgets]}
    for name, em, rows in tasks:
        best = {b: float("inf") for b in totals}
        ref = old_way(em, rows)
        diff = max(float((new_way(em, rows, b) - ref).nan_to_num(0.0, 0.0, 0.0).abs().max()) for b in budgets)
        for _ in range(args.rounds):
            for b in totals:
                t = time.perf_counter()
                old_way(em, rows) if b == "old" else new_way(em, rows, b)
                best[b] = min(best[b], time.perf_counter() - t)
        for b in totals:
            totals[b] += best[b]
        lens = [em.head_type.row_length(r) for r in rows]
        padded = sum(len(lens[i: i + 64]) * max(lens[i: i + 64]) for i in range(0, len(lens), 64))
        now = sum(len(bt) * max(lens[i] for i in bt) for bt in length_batches(lens, 64))
        cells = [name, str(len(rows)), f"{padded:,} → {now:,}", f"{best['old']:.2f}"]
        cells += [f"{best[b] / best['old']:.2f}×" for b in budgets] + [f"{diff:.1e}"]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    cells = ["**all**", "", "", f"{totals['old']:.2f}"] + [f"**{totals[b] / totals['old']:.2f}×**" for b in budgets] + [""]
    lines.append("| " + " | ".join(cells) + " |")
    table = (f"Wall time of ExpertModel.class_scores over each task's 16-shot training split (seed 0), best of "
             f"{args.rounds} alternating rounds, as a ratio to the old way (below 1: faster); the packaged MiniLM "
             f"with the zoo's starting LoRA expert, {torch.get_num_threads()} threads. Tokens: padded positions "
             "scored (texts; the multiple-choice rows also score their candidates, not counted).\n\n"
             + "\n".join(lines))
    print(table)
    if not args.no_write:
        put_block("scoring-batches", "Scoring in batches of like length", "scoring_batches.py", table)


if __name__ == "__main__":
    main()
