"""Task embeddings in the zoo: compute and store them, load them checked, rank tasks by them
(the whole zoo's similarity graph is pizoo.graph).

Ranking needs numpy and h5py only (torch is imported by the functions
that compute embeddings): `similar NAME --k K` ranks every task on the zoo's index of sketches
with one matrix product and reranks the best candidates on their exact Fisher vectors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from pizoo.data import Columns, TaskData, label_set_of, load_rows, read_examples
from pizoo.errors import DataError, MissingEmbedding, PizooError, UsageError
from pizoo.index import GROUPS, INDEX, VIEW_OF_METRIC, Index, check_space, read_h5, sketch
from pizoo.predict import check_by, default_by, rank_data
from pizoo.progress import log
from pizoo.results import Neighbour
from pizoo.similarity import METRICS, check, rank
from pizoo.zoo import Zoo

# Exact rerank of the sketch's best candidates: RERANK per wanted neighbour, at least MIN_CANDIDATES
# (measured in benchmarks/scale.py: top-k agreement with the exact ranking).
RERANK, MIN_CANDIDATES = 5, 25


def embed_task(zoo: Zoo, name: str, *, samples: int | None = None, seed: int = 0, data: str | None = None,
               columns: Columns | None = None, device: str = "cpu"):
    """(Re)compute a task's fisher.h5 from its own training data (or `data`) and swap it in."""
    from pizoo.evaluate import read_labelled, task_columns
    from pizoo.fisher import embedding_writer
    from pizoo.tasks import load_task_model, task_data

    manifest = zoo.manifest(name)
    if data is not None:  # the task's own label set: its embedding is of its task
        ex, _, ids = read_labelled(data, task_columns(manifest, columns), manifest.labels)
    else:
        td = task_data(zoo, name, manifest)
        ex, ids = td.train, td.label_ids(td.train)
    em, _ = load_task_model(zoo, name, device)
    rows = em.encode(ex, ids)
    return zoo.save_embedding(name, embedding_writer(em, rows, seed=seed, samples=samples))


def embed_tasks(zoo: Zoo, names: list[str], *, keep_going: bool = False, **kwargs) -> list[dict[str, Any]]:
    """embed_task over several tasks; with `keep_going` a failing task is recorded and the rest go on."""
    results = []
    for name in names:
        try:
            m = embed_task(zoo, name, **kwargs)
            results.append({"task": name, "ok": True, **zoo.embedding_entry(m)})
        except PizooError as e:
            if not keep_going:
                raise
            results.append({"task": name, "ok": False, "error": str(e)})
    return results


def load_embedding(zoo: Zoo, name: str, group: str = "expert") -> dict[str, np.ndarray]:
    """A task's embedding, checked: present, uncorrupted, of this zoo's space, finite and non-zero."""
    if group not in GROUPS:
        raise UsageError(f"--which {group!r} is not one of {', '.join(GROUPS)}")
    manifest = zoo.manifest(name)
    if not zoo.has_embedding(manifest):
        raise MissingEmbedding(f"task {name!r} has no Fisher embedding", f"pizoo embed {name}")
    vec, attrs = read_h5(zoo.embedding_file(name), group)
    check_space(attrs, zoo.spec, f"the embedding of {name!r}")
    check(vec, name)
    return vec


def embedded_tasks(zoo: Zoo, group: str = "expert", exclude: tuple[str, ...] = ()) -> dict[str, dict]:
    """Embeddings of every task that has a usable one; the others are named on stderr."""
    out, skipped = {}, []
    for name in zoo.task_names():
        if name in exclude:
            continue
        try:
            out[name] = load_embedding(zoo, name, group)
        except PizooError as e:  # missing, corrupt or unreadable: skip it, say so
            skipped.append(f"{name} ({e.message})")
    if skipped:
        log.warning("skipped tasks without a usable embedding: " + "; ".join(skipped)
            + " — compute them with: pizoo embed --all")
    return out


def check_k(k: int, available: int) -> None:
    if k < 1:
        raise UsageError(f"--k must be at least 1, got {k}")
    if available == 0:
        raise MissingEmbedding("no other embedded task to compare with",
                               "add tasks (pizoo add-task NAME --data FILE) or embed them (pizoo embed --all)")
    if k > available:
        raise UsageError(f"--k {k} is more than the {available} other embedded task(s) of the zoo",
                         f"use --k {available} or less")


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r} is not one of {', '.join(METRICS)}")


def similar(zoo: Zoo, name: str, *, k: int | None = None, metric: str = "cosine", group: str = "expert"
            ) -> list[Neighbour]:
    """Rank every other task by similarity to `name`; keep the top `k` if given (embeddings only:
    pizoo.predict adds the fit of each expert to the target's data)."""
    ranked = ranked_by_embedding(zoo, name, metric=metric, group=group, count=k)
    return [Neighbour(i + 1, t, s) for i, (t, s) in enumerate(ranked)]


def ranked_by_embedding(zoo: Zoo, name: str, *, metric: str = "cosine", group: str = "expert",
                        count: int | None = None, exclude: tuple[str, ...] | list[str] = ()
                        ) -> list[tuple[str, float]]:
    """The other tasks, nearest `name` first (the top `count`, or all), leaving out `exclude`.

    With `count` and a current index, the sketches pick the candidates and only those are compared
    exactly; `centred` is a sketch metric (pizoo.index) and always ranks on the sketches; otherwise
    every embedded task is compared exactly."""
    check_metric(metric)
    target = load_embedding(zoo, name, group)
    exclude = tuple(n for n in exclude if n != name)
    idx = current_index(zoo, group, metric)
    if metric == "centred":
        idx = idx if idx is not None and name in idx.row else zoo.build_index()
        row = idx.arrays[f"{group}/cosine"][idx.row[name]] if name in idx.row else sketch(target)["cosine"]
        ranked = idx.candidates(name, group, metric, None, exclude, row=row)
        check_k(count if count is not None else 1, len(ranked))
        return ranked[:count] if count else ranked
    if count is not None and idx is not None and name in idx.row:
        check_k(count, len(idx.names) - 1 - sum(n in idx.row for n in exclude))
        candidates = [n for n, _ in idx.candidates(name, group, metric, max(RERANK * count, MIN_CANDIDATES), exclude)]
        vecs = embeddings_of(zoo, candidates, group)
        if any(zoo.sha(zoo.manifest(n), "embedding") != idx.sha[idx.row[n]] for n in vecs):
            log.warning("warning: the zoo's index is stale (an embedding changed since): run pizoo verify")
        return rank(target, vecs, metric)[:count]
    if count is not None:
        log.warning("warning: the zoo's index is missing or stale: comparing every task exactly "
                    "(pizoo verify rebuilds it)")
    others = embedded_tasks(zoo, group, exclude=(name, *exclude))
    check_k(count if count is not None else 1, len(others))
    ranked = rank(target, others, metric)
    return ranked[:count] if count else ranked


def ranked_by_vector(zoo: Zoo, vec: dict, *, metric: str = "cosine", group: str = "probe",
                     count: int | None = None) -> list[tuple[str, float]]:
    """The embedded tasks nearest an embedding that is not in the zoo (new data), best first: the
    top `count` (None: all). With `count` and a current index, the sketches pick the candidates and
    only those are compared exactly (`centred` always ranks on the sketches)."""
    check_metric(metric)
    idx = current_index(zoo, group, metric)
    if metric == "centred":
        idx = idx or zoo.build_index()
        ranked = idx.candidates("", group, metric, count, row=sketch(vec)["cosine"])
    elif count is not None and idx is not None:
        row = sketch(vec)[VIEW_OF_METRIC[metric]]
        near = [n for n, _ in idx.candidates("", group, metric, max(RERANK * count, MIN_CANDIDATES), row=row)]
        ranked = rank(vec, embeddings_of(zoo, near, group), metric)
    else:
        ranked = rank(vec, embedded_tasks(zoo, group), metric)
    check_k(count if count is not None else 1, len(ranked))
    return ranked[:count] if count else ranked


def current_index(zoo: Zoo, group: str, metric: str) -> Index | None:
    """The zoo's index when it covers exactly the zoo's tasks (else None: a task added or removed
    since, by an interrupted write or a copied-in folder, would be missed or offered)."""
    idx = Index.read(zoo.root / INDEX, keys=[f"{group}/{VIEW_OF_METRIC[metric]}"])
    if idx is None or sorted(idx.tasks) != zoo.task_names():
        return None
    return idx


def embeddings_of(zoo: Zoo, names: list[str], group: str) -> dict[str, dict]:
    out, skipped = {}, []
    for n in names:
        try:
            out[n] = load_embedding(zoo, n, group)
        except PizooError as e:
            skipped.append(f"{n} ({e.message})")
    if skipped:
        log.warning("skipped tasks without a usable embedding: " + "; ".join(skipped)
                    + " — compute them with: pizoo embed --all")
    return out


def rank_by_probe(zoo: Zoo, data: str, columns: Columns, *, k: int | None = None, metric: str = "cosine",
                  samples: int | None = None, seed: int = 0, device: str = "cpu", by: str | None = None):
    """Embed data that has no expert with the zoo's probe; rank the zoo's tasks against it through
    the two stages of pizoo.predict (`by`: fisher, fit or both; default both with a shared-space head).

    Returns the model (fresh expert, the data's label set), the encoded rows and the Ranking (cut to k)."""
    from pizoo.fisher import choose, probe_fisher
    from pizoo.models import ExpertModel

    check_metric(metric)
    by = by or default_by(zoo, has_data=True)
    check_by(by)
    check_k(k if k is not None else 1, len(zoo.task_names()))  # fail before the probe Fisher in an empty zoo
    ex = read_examples(load_rows(data), columns, str(data), Path(data).parent)
    labels = label_set_of(ex)
    if len(labels) < 2:
        raise DataError(f"{data} has one class only ({labels[0]!r}): a task needs two or more")
    em = ExpertModel(zoo.spec, labels, device=device)
    rows = em.encode(ex, TaskData(ex, ex, labels).label_ids(ex))
    sample = choose(rows, samples, seed)
    vec = {n: t.numpy() for n, t in probe_fisher(em, sample).items()}
    check(vec, str(data))
    ranking = rank_data(zoo, vec, em, sample, by=by, metric=metric, label=str(data), count=k)
    if k:
        ranking = dataclasses.replace(ranking, candidates=ranking.candidates[:k])
    return em, rows, ranking


def similar_to_data(zoo: Zoo, data: str, columns: Columns, **kwargs):
    """Zero-shot: rank the zoo's tasks against data that has no expert yet (probe embeddings, then
    the fit of each expert to the data). Returns the Ranking."""
    return rank_by_probe(zoo, data, columns, **kwargs)[2]
