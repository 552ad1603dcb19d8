"""The zoo's similarity graph: the matrix of every pair of tasks (exact, from the index's sketches
past EXACT_MATRIX_LIMIT tasks, of clusters past MATRIX_LIMIT), and the groups the heatmap shows.
numpy and h5py only: `pizoo graph` never loads torch."""

from __future__ import annotations

import numpy as np

from pizoo.embed import check_metric, current_index, embedded_tasks, embeddings_of, similar
from pizoo.errors import MissingEmbedding, UsageError
from pizoo.index import INDEX, VIEW_OF_METRIC, Index
from pizoo.inputs import input_type_for
from pizoo.similarity import matrix
from pizoo.zoo import Zoo

EXACT_MATRIX_LIMIT = 300  # beyond this many tasks `graph` compares sketches, not full vectors
MATRIX_LIMIT = 3000  # beyond this the matrix is one of clusters of tasks (or draw a neighbourhood: --around)


def similarity_matrix(zoo: Zoo, metric: str = "cosine", group: str = "expert", tasks: list[str] | None = None,
                      around: str | None = None, k: int = 50
                      ) -> tuple[list[str], np.ndarray, bool, dict[str, list[str]] | None]:
    """The similarity matrix of the zoo's tasks, of `tasks`, or of `around` and its k nearest.

    Returns (names, matrix, exact, clusters): over EXACT_MATRIX_LIMIT tasks the matrix compares the
    index's sketches (exact False); over MATRIX_LIMIT the rows are clusters of tasks (k-means on
    the sketches), and `clusters` names the tasks of each."""
    check_metric(metric)
    if around is not None:
        tasks = [around] + [r.task for r in similar(zoo, around, k=k, metric=metric, group=group)]
    names = sorted(tasks) if tasks else [n for n in zoo.task_names()]
    if metric == "centred" and len(names) <= EXACT_MATRIX_LIMIT:  # a sketch metric: the zoo's mean is in the index
        idx = current_index(zoo, group, metric) or zoo.build_index()
        key = f"{group}/{VIEW_OF_METRIC[metric]}"
        names = [n for n in names if n in idx.row and idx.arrays[key][idx.row[n]].any()]
        if len(names) < 2:
            raise MissingEmbedding(f"{len(names)} embedded task(s): a similarity matrix needs two or more",
                                   "pizoo add-task NAME --data FILE")
        return names, idx.matrix(names, group, metric), False, None
    if len(names) > EXACT_MATRIX_LIMIT:
        key = f"{group}/{VIEW_OF_METRIC[metric]}"
        idx = Index.read(zoo.root / INDEX, keys=[key])
        if idx is None:
            raise MissingEmbedding("the zoo has no current index for a matrix this large", "pizoo verify")
        names = [n for n in names if n in idx.row and idx.arrays[key][idx.row[n]].any()]
        if len(names) <= MATRIX_LIMIT:
            return names, idx.matrix(names, group, metric), False, None
        return cluster_matrix(names, idx.arrays[key][[idx.row[n] for n in names]])
    vecs = embeddings_of(zoo, names, group) if tasks else embedded_tasks(zoo, group)
    if len(vecs) < 2:
        raise MissingEmbedding(f"{len(vecs)} embedded task(s): a similarity matrix needs two or more",
                               "pizoo add-task NAME --data FILE")
    names, m = matrix(vecs, metric)
    return names, m, True, None


GROUPINGS = ("none", "modality", "family")


def task_groups(zoo: Zoo, names: list[str], how: str) -> list[str] | None:
    """One group per task for the heatmap: its input modality (from the columns it was made from),
    or its family (the name up to the first '-'); None for no grouping."""
    if how not in GROUPINGS:
        raise UsageError(f"--group {how!r} is not one of {', '.join(GROUPINGS)}")
    if how == "none":
        return None
    if how == "family":
        return [n.split("-", 1)[0] for n in names]
    return [modality(zoo.manifest(n).source.get("columns") or {}) for n in names]


def modality(columns: dict | None) -> str:
    """What a task reads, from the columns record of its source: image, image-text, regions, text,
    text-pair ("?" for a task made without data: an imported adapter)."""
    if not columns:
        return "?"
    return input_type_for(k for k in ("text", "text_pair", "image", "boxes") if columns.get(k))


def cluster_matrix(names: list[str], rows: np.ndarray, clusters: int = 200, iterations: int = 20, seed: int = 0
                   ) -> tuple[list[str], np.ndarray, bool, dict[str, list[str]]]:
    """Spherical k-means of unit sketch rows; the matrix of the clusters' mean directions."""
    rng = np.random.default_rng(seed)
    c = min(clusters, len(names))
    centres = rows[rng.choice(len(names), size=c, replace=False)]
    for _ in range(iterations):
        assign = np.argmax(rows @ centres.T, axis=1)
        for j in range(c):
            members = rows[assign == j]
            if len(members):
                centre = members.sum(0)
                centres[j] = centre / max(float(np.linalg.norm(centre)), 1e-12)
    assign = np.argmax(rows @ centres.T, axis=1)
    used = [j for j in range(c) if (assign == j).any()]
    groups = {f"cluster-{i:03d}": [n for n, a in zip(names, assign) if a == j] for i, j in enumerate(used)}
    m = np.clip(centres[used] @ centres[used].T, -1.0, 1.0).astype(np.float64)
    np.fill_diagonal(m, 1.0)
    return list(groups), m, False, groups
