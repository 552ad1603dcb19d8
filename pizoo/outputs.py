"""Where a command may write a file of its own (`--out`, `--csv` of graph, curve, landscape): never
inside a zoo (a figure must not replace zoo.toml, a task's files or the index, and nothing there is
written without the zoo's lock), and never over a file pizoo did not write unless `--force`.

pizoo marks what it writes so that a rerun may replace it: a PNG carries `Software: pizoo` in its
metadata; a similarity CSV starts with the header cell `task` and holds one numeric row per task.
The write itself is atomic (pizoo.zoo.atomic_write)."""

from __future__ import annotations

import csv
from pathlib import Path

from pizoo.errors import UsageError

SOFTWARE = "pizoo"
ZOO_MARKER = "zoo.toml"


def zoo_holding(path: Path) -> Path | None:
    """The zoo folder that `path` is or lies inside (a folder holding zoo.toml), if any."""
    for folder in (path, *path.parents):
        if (folder / ZOO_MARKER).is_file():
            return folder
    return None


def check_output(out: Path, zoo_root: Path, *, force: bool = False, flag: str = "--out") -> Path:
    """Refuse `out` when it lies in a zoo (this command's or any other), is a folder, or is an
    existing file pizoo did not write (unless `force`). Returns `out`, its folder made."""
    out = Path(out)
    target = out.resolve()
    root = Path(zoo_root).resolve()
    inside = target == root or root in target.parents or zoo_holding(target.parent)
    if inside:
        raise UsageError(f"{flag} {out} lies inside a zoo ({inside if isinstance(inside, Path) else root}): "
                         "pizoo writes figures and tables outside zoos only", f"choose a {flag} path outside the zoo")
    if target.is_dir():
        raise UsageError(f"{flag} {out} is a folder", f"give {flag} a file name, e.g. {out / 'out.png'}")
    if target.exists() and not force and not written_by_pizoo(target):
        raise UsageError(f"{flag} {out} exists and was not written by pizoo",
                         f"choose another {flag}, or add --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    return out


def written_by_pizoo(path: Path) -> bool:
    """A PNG with pizoo's Software tag, or a similarity CSV as pizoo writes it."""
    try:
        head = path.read_bytes()[:8]
    except OSError:
        return False
    if head.startswith(b"\x89PNG"):
        try:
            from PIL import Image

            with Image.open(path) as im:
                return str(im.info.get("Software", "")).startswith(SOFTWARE)
        except Exception:  # not a readable PNG: not ours
            return False
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    if not rows or rows[0][:1] != ["task"] or len(rows) != len(rows[0]):
        return False
    try:
        return all(len(r) == len(rows[0]) and all(_is_float(v) for v in r[1:]) for r in rows[1:])
    except ValueError:
        return False


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False
