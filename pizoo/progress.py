"""How the library reports what it is doing without printing: `logging` for messages, and a
progress callback the caller installs (the CLI draws rich bars with it; scripts get silence).

    with progress.task("training sst2", total=100) as advance:
        advance(1, loss=0.42)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ContextManager

log = logging.getLogger("pizoo")

# desc, total, fields -> a context manager yielding advance(n=1, **fields)
Advance = Callable[..., None]
Reporter = Callable[[str, int, dict[str, Any]], ContextManager[Advance]]
_reporter: Reporter | None = None


def set_reporter(reporter: Reporter | None) -> Reporter | None:
    """Install the progress reporter (None: silence); returns the previous one."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def _noop(n: int = 1, **fields: Any) -> None:
    return None


@contextmanager
def task(desc: str, total: int, enabled: bool = True, **fields: Any) -> Iterator[Advance]:
    """A unit of long work with `total` steps; yields advance(n=1, **fields)."""
    if _reporter is None or not enabled:
        yield _noop
        return
    with _reporter(desc, total, fields) as advance:
        yield advance
