"""Score a task's expert on data: its own held-out split, another task's (any expert scores any
task in a shared label space), or a file read with the task's columns."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pizoo.candidates import iou_hits
from pizoo.config import TaskManifest
from pizoo.data import Columns, Examples, TaskData, label_set_of, load_rows, read_examples
from pizoo.errors import DataError, UsageError
from pizoo.heads import get_head
from pizoo.results import Evaluation
from pizoo.tasks import load_task_model, task_data
from pizoo.zoo import Zoo


def read_labelled(path: str | Path, columns: Columns, labels: tuple[str, ...] | None = None
                  ) -> tuple[Examples, tuple[str, ...], list[int]]:
    """Examples from a file with their label set and label indices: `labels` pins the label set
    (a per-task head's), None takes the data's own labels."""
    ex = read_examples(load_rows(path), columns, str(path), Path(path).parent)
    label_set = labels or label_set_of(ex)
    return ex, label_set, TaskData(ex, ex, label_set).label_ids(ex)


def task_columns(manifest: TaskManifest, columns: Columns | None = None) -> Columns:
    """The columns to read new data of a task with: `columns` if given (keeping the task's verbalizer
    and label template unless it brings its own), else those the task was trained with."""
    own = Columns.from_record(manifest.source.get("columns", {}))
    if columns is None:
        return own
    return dataclasses.replace(columns, verbalizer=columns.verbalizer or own.verbalizer,
                               label_template=columns.label_template or own.label_template)


def read_for_task(zoo: Zoo, manifest: TaskManifest, path: str | Path, columns: Columns | None
                  ) -> tuple[Examples, tuple[str, ...], list[int]]:
    """A data file read to be scored by a task's expert.

    A per-task head scores only its own labels. A shared-space head scores whatever labels the data
    has: the task's verbalizer and label template apply when they cover the data's labels, and
    otherwise the data's labels are read as they are (another task's data)."""
    cols = task_columns(manifest, columns)
    if get_head(zoo.spec.head).per_task:
        return read_labelled(path, cols, manifest.labels)
    try:
        ex, labels, ids = read_labelled(path, cols)
    except DataError:
        explicit = columns is not None and (columns.verbalizer or columns.label_template)
        if explicit or not (cols.verbalizer or cols.label_template):
            raise
        ex, labels, ids = read_labelled(path, dataclasses.replace(cols, verbalizer=(), label_template=None))
    if set(labels) <= set(manifest.labels):  # the task's own labels: keep its order
        labels = manifest.labels
        ids = TaskData(ex, ex, labels).label_ids(ex)
    return ex, labels, ids


def evaluate_task(zoo: Zoo, name: str, *, data: str | None = None, columns: Columns | None = None,
                  on: str | None = None, device: str = "cpu") -> Evaluation:
    """Accuracy of a task's expert on its held-out split, on a file, or on another task's held-out
    split (`on`): with a shared-space head any expert scores any task's labels."""
    if data is not None and on is not None:
        raise UsageError("give --data FILE or --on TASK, not both")
    manifest = zoo.manifest(name)
    zoo.expert_file(name)  # a corrupt expert is the first thing to hear about
    if data is not None:
        ex, labels, ids = read_for_task(zoo, manifest, data, columns)
        where = str(Path(data).resolve())
    else:
        other = zoo.manifest(on) if on else manifest
        td = task_data(zoo, other.name, other)
        ex, labels, ids, where = td.eval, td.labels, td.label_ids(td.eval), f"eval split of {other.name}"
    em, _ = load_task_model(zoo, name, device, labels=labels)
    rows = em.encode(ex, ids)
    iou50 = None
    if ex.boxes is not None:  # referring expressions: the chosen box at IoU >= 0.5 with the gold one

        hits = iou_hits(rows, em.predict(rows))
        iou50 = sum(hits) / len(hits) if hits else float("nan")
    return Evaluation(name, em.accuracy(rows), len(rows), where, list(labels), iou50)
