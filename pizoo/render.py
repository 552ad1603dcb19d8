"""Output: data to stdout (a rich table on a terminal, JSON with --json); logs and progress to stderr."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


def out() -> Console:
    # Built per call so CliRunner's swapped sys.stdout is honoured.
    return Console(file=sys.stdout, soft_wrap=True)


def err() -> Console:
    return Console(file=sys.stderr, soft_wrap=True)


def log(message: str) -> None:
    err().print(message, highlight=False)


def _clean(obj: Any) -> Any:
    """JSON has no NaN: write null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(_clean(obj), sort_keys=False) + "\n")
    sys.stdout.flush()


def emit_jsonl(rows: Iterable[Any]) -> None:
    for row in rows:
        emit_json(row)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4f}"
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def table(rows: Sequence[dict], columns: Sequence[str], title: str | None = None) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*(fmt(r.get(c)) for c in columns))
    out().print(t)


def key_values(pairs: dict[str, Any], title: str | None = None) -> None:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in pairs.items():
        t.add_row(k, fmt(v))
    out().print(t)


@contextmanager
def progress(disable: bool = False):
    """A progress bar on stderr; tasks carry a `loss` field shown beside the bar."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=err(), disable=disable, transient=False)
    with bar:
        yield bar


@contextmanager
def steps_progress(desc: str, total: int, disable: bool = False):
    """A plain counting bar (no loss) for evaluation-like loops."""
    console = err()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, disable=disable or not console.is_terminal, transient=True)
    with bar:
        task = bar.add_task(desc, total=total)
        yield lambda n=1: bar.advance(task, n)
