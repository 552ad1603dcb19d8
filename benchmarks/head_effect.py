"""How much do per-task classification heads shape Fisher similarity? (trap (b) of the embeddings)

With `classification` zoos the gradients that reach the expert pass through each task's head, and
every head of a given label count starts from the same seeded initialisation; so tasks with the
same number of labels may look alike for that reason alone. Over an existing zoo's tasks (e.g. the
demo's real tasks), this prints the mean similarity of task pairs with the same label count and
with different label counts, for each embedding group and metric. The head itself is never part of
the Fisher vector.

    .venv/bin/python benchmarks/head_effect.py demo-out/zoo
"""

from __future__ import annotations

import itertools
import statistics
import sys


def main(root: str) -> None:
    from pizoo.embed import embedded_tasks
    from pizoo.similarity import similarity
    from pizoo.zoo import Zoo

    zoo = Zoo(root)
    tasks = [t for t in zoo.task_names() if zoo.manifest(t).provenance.get("how") == "train"]
    n_labels = {t: len(zoo.manifest(t).labels) for t in tasks}
    print(f"zoo {root}: {len(tasks)} trained tasks; label counts: "
          + ", ".join(f"{t}={n}" for t, n in n_labels.items()))
    print(f"{'group':7} {'metric':11} {'same label count':>17} {'different':>10} {'gap':>7}   closest pair")
    for group in ("expert", "probe"):
        vecs = {t: v for t, v in embedded_tasks(zoo, group).items() if t in tasks}
        for metric in ("cosine", "normalized"):
            same, diff, best = [], [], (-2.0, "")
            for a, b in itertools.combinations(sorted(vecs), 2):
                s = similarity(vecs[a], vecs[b], metric)
                (same if n_labels[a] == n_labels[b] else diff).append(s)
                best = max(best, (s, f"{a} ~ {b}"))
            ms = statistics.mean(same) if same else float("nan")
            md = statistics.mean(diff) if diff else float("nan")
            print(f"{group:7} {metric:11} {ms:17.3f} {md:10.3f} {ms - md:7.3f}   {best[1]} ({best[0]:.3f})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-out/zoo")
