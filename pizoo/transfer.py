"""Zero-shot transfer: a task that has data but no expert takes the expert of its nearest task in
the zoo (by probe embedding), or the uniform mixture of its top-k. With a shared-space head the
expert is used as it is: no head to retrain, whatever the labels."""

from __future__ import annotations

from pizoo.embed import rank_by_probe
from pizoo.errors import DataError, UsageError
from pizoo.interpolate import load_expert_part, parse_k
from pizoo.mixture import uniform


def zero_shot(zoo, name: str, data: str, columns, *, k: int | str = 1, metric: str = "cosine",
              samples: int | None = None, device: str = "cpu", by: str | None = None) -> dict:
    """A task with data but no expert: use its nearest task's expert (or the uniform mixture of the
    top-k), ranked as `similar --data` ranks (pizoo.predict), and report the accuracy on the data.
    The fit stage scores on the same examples the accuracy is reported on: say so where it matters."""
    from pizoo.models import load_tensors, split_head

    k = parse_k(k)
    if k is None:
        raise UsageError("--k auto needs the target's own expert to compare with; with --zero-shot give a number")
    em, rows, ranking = rank_by_probe(zoo, data, columns, k=k, metric=metric, samples=samples, device=device, by=by)
    top = [(c.task, c.similarity) for c in ranking.candidates]
    labels = em.labels
    experts = [load_expert_part(zoo, t, em) for t, _ in top]
    state = uniform(experts)
    if em.head:  # a per-task head: only the nearest task's own head can score, and only its labels
        nearest = top[0][0]
        if tuple(zoo.manifest(nearest).labels) != labels:
            raise DataError(f"the nearest task {nearest!r} has labels {list(zoo.manifest(nearest).labels)}, the data "
                            f"has {list(labels)}: a {zoo.spec.head} head cannot transfer across label sets",
                            "use a shared-space head (pizoo init --head match), or train the task: pizoo add-task")
        _, head = split_head(load_tensors(zoo.expert_file(nearest)))
        state.update(head)
    em.load_state(state, where="zero-shot expert")
    return {"task": name, "data": str(data), "k": k, "metric": metric,
            "by": ranking.by, "sources": [c.to_json() for c in ranking.candidates], "accuracy": em.accuracy(rows), "n": len(rows)}
