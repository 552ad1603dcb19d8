"""Output: data to stdout (a rich table on a terminal, JSON with --json); logs and progress to stderr."""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pizoo import progress


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
    if hasattr(obj, "to_json"):  # a typed result (pizoo.results)
        return _clean(obj.to_json())
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


def ranking(r, title: str) -> None:
    """A pizoo.predict Ranking: the candidates with both scores, and what the fit cost (stderr)."""
    rows = r.rows()
    if r.by == "fisher":
        return table(rows, ["rank", "task", "similarity"], title=title + ")")
    table(rows, ["rank", "task", "fit_log_likelihood", "fit_accuracy", "similarity"],
          title=title + f", then fit on {r.n_examples} examples)")
    cost = r.cost()
    few = sorted({c.fit_examples for c in r.candidates if c.fit_examples and c.fit_examples < r.n_examples})
    if few:
        log(f"raced: every recalled expert fitted on {few[0]} examples first, the best on all {r.n_examples}")
    log(f"fit of {cost['recalled']} experts in {cost['fit_seconds']:.1f} s ({cost['fit_seconds_per_candidate']:.2f} s "
        f"each); embedding recall {cost['fisher_seconds']:.2f} s")


def below_zero_shot(name: str, m: dict) -> None:
    """add-task's warning: training left the expert worse than where it started, beyond noise."""
    log(f"[yellow]warning[/]: {name}'s expert scores {m['accuracy']:.3f} on its {m['n_eval']} eval examples, "
        f"worse beyond noise than the expert it started from ({m['accuracy_zero_shot']:.3f}; for lora, adapter "
        "and adalink the base model itself). Try a lower --lr or fewer --epochs, more --shots, or "
        f"`pizoo interpolate --target {name}` if the zoo holds a relative.")


def zero_shot(result: dict) -> None:
    key_values({"task": result["task"], "accuracy": result["accuracy"], "n": result["n"],
                "sources": ", ".join(f"{s['task']} ({s['similarity']:.3f})" for s in result["sources"])},
               title="zero-shot transfer")


def interpolation(record: dict) -> None:
    """An interpolate result: how its sources were chosen, softmax(α), the accuracies, what was kept."""
    m, init = record["metrics"], record["init"]
    auto = record.get("auto")
    if auto:
        table([{"sources": ", ".join(p["sources"]) or "(none: the target alone, as long)", "accuracy": p["accuracy"],
                "log-likelihood": p["log_likelihood"], "steps": p["steps"]} for p in auto["probes"]], ["sources", "accuracy", "log-likelihood", "steps"],
              title=f"--k auto for {record['target']}: probes on the eval split")
        log(f"{auto['reason']} (cost: {auto['cost_interpolations']} interpolations)")
    if record["sources"]:
        cols = ["source", "similarity"] + (["fit_log_likelihood", "fit_accuracy"]
                                           if any(s.get("fit_log_likelihood") is not None for s in record["sources"]) else [])
        table([{"source": s["task"], **s} for s in record["sources"]], cols,
              title=f"{record['task']}: {record['target']} mixed with")
    alpha = "; ".join(f"{site}: {', '.join(f'{x:.3f}' for x in w)}" for site, w in list(record["alpha"].items())[:4])
    rows = {"alpha (softmax)": alpha + (" …" if len(record["alpha"]) > 4 else "") if alpha else "–",
            "accuracy, target alone": m["accuracy_target"]}
    if f"accuracy_{init}_mixture" in m:
        rows[f"accuracy, {init} mixture before tuning"] = m[f"accuracy_{init}_mixture"]
    if "accuracy_interpolated" in m:
        rows["accuracy, interpolated"] = m["accuracy_interpolated"]
    kept = {"interpolated": "interpolated expert", "target": "target's own expert", "control": "target's expert "
            "trained as long as a probe (the control)", "probe": "best probe's mixture",
            "base": "base model (the zoo's untrained starting expert)"}.get(record["kept"],
                                                                                          record["kept"])
    if record["kept"].startswith("source "):
        kept = f"expert of {record['kept'][7:]} alone (no target data)"
    rows.update({"steps": m["steps"], "saved": f"{kept} (accuracy {m['accuracy']:.3f} on the eval split)"})
    key_values(rows, title="result")


@contextmanager
def bar(desc: str, total: int, fields: dict[str, Any]):
    """The CLI's progress reporter (pizoo.progress): a bar on stderr; a `loss` field is shown beside
    it (training bars stay; counting bars are transient and drawn on a terminal only)."""
    console = err()
    training = "loss" in fields
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if training:
        columns.append(TextColumn("loss {task.fields[loss]:.4f}"))
    columns += [TimeElapsedColumn()] + ([TimeRemainingColumn()] if training else [])
    prog = Progress(*columns, console=console, transient=not training,
                    disable=not training and not console.is_terminal)
    with prog:
        task = prog.add_task(desc, total=total, **fields)
        yield lambda n=1, **f: prog.update(task, advance=n, **f)


class _StderrHandler(logging.Handler):
    """The library's log records, one line each on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log(record.getMessage())
        except Exception:  # a log line must never break a command
            self.handleError(record)


_handler = _StderrHandler()


def install() -> None:
    """Route the library's logging and progress to stderr (once per process)."""
    logger = logging.getLogger("pizoo")
    if _handler not in logger.handlers:
        logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    progress.set_reporter(bar)
