"""Examples that bring their own candidates: multiple-choice questions, questions answered from
candidate answers, and referring expressions whose candidates are boxes in the example's image.

An example's label is the gold candidate's position among its own candidates ("0", "1", ...), so
the rest of pizoo (splits, shots, label ids, accuracy, log p(gold | x), the per-example Fisher,
interpolation) works on candidate tasks unchanged: a head scores each (input, candidate) pair the
way it scores a label text, and log p(gold | x) is the log-softmax over that example's candidates
only (positions an example does not have score -inf). A fixed label set is the special case where
every example has the same candidates.

This module reads candidates as users have them (a list column, or one string of `A. ...` lines;
the gold as its index, letter or text; boxes as `[x, y, w, h]` in pixels, COCO's convention, the
gold as an index or a box) and holds the ragged batching the heads share."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from pizoo.errors import DataError

LETTERED = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.*\S)\s*$")  # "A. text", "A) text", "(A) text", "A: text"
HINT = "give a list of answers (json/parquet list, or a csv cell holding a JSON list) or one `A. ...` line each"


def parse_choices(value, where: str, column: str) -> list[str]:
    """One example's candidates: a list of texts, a JSON list in a string, or `A. ...` lines."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise DataError(f"{where}: column {column!r} starts like a JSON list but is not one", HINT) from None
        else:
            lines = [ln for ln in text.splitlines() if ln.strip()]
            matched = [LETTERED.match(ln) for ln in lines]
            letters = [m.group(1) for m in matched if m]
            if not lines or not all(matched) or letters != [chr(ord("A") + i) for i in range(len(letters))]:
                raise DataError(f"{where}: column {column!r} is neither a list of answers nor `A. ...` lines "
                                "(A, B, C, ... in order, one per line)", HINT)
            value = [m.group(2) for m in matched]
    if not isinstance(value, (list, tuple)) or any(isinstance(v, (dict, list, tuple)) for v in value):
        raise DataError(f"{where}: column {column!r} holds a {type(value).__name__}, not a list of answer texts", HINT)
    options = [str(v).strip() for v in value]
    if len(options) < 2:
        raise DataError(f"{where}: {len(options)} candidate in column {column!r}: an example needs two or more "
                        "to choose from")
    if any(not o for o in options):
        raise DataError(f"{where}: column {column!r} has an empty candidate")
    return options


def gold_position(label, options: Sequence[str], where: str, column: str) -> int:
    """The gold candidate's position: the label as a 0-based index, a letter (A = the first), the
    answer's line ("A. bank"), or the answer's text."""
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if isinstance(label, bool) or isinstance(label, (list, tuple, dict)):
        raise DataError(f"{where}: the label in column {column!r} is a {type(label).__name__}, not an index, a "
                        "letter or an answer's text")
    if isinstance(label, int):
        index = label
    else:
        text = str(label).strip()
        lettered = LETTERED.match(text)
        if re.fullmatch(r"[A-Z]", text) and ord(text) - ord("A") < len(options):
            index = ord(text) - ord("A")
        elif lettered and ord(lettered.group(1)) - ord("A") < len(options):  # the answer's line, "A. bank"
            index = ord(lettered.group(1)) - ord("A")
            if _plain(options[index]) != _plain(lettered.group(2)):  # the letter and its text must agree
                raise DataError(f"{where}: the label {text!r} names option {lettered.group(1)}, which reads "
                                f"{options[index]!r}", "fix the label or the options of that row")
        elif re.fullmatch(r"-?\d+", text):
            index = int(text)
        elif text in options:
            index = list(options).index(text)
        else:
            raise DataError(f"{where}: the label {text!r} is neither an index, a letter nor one of its "
                            f"{len(options)} candidates", "give the gold as its 0-based index, its letter (A, B, "
                            "...) or the answer's exact text")
    if not 0 <= index < len(options):
        raise DataError(f"{where}: gold index {index} is out of range for its {len(options)} candidates "
                        f"(0 to {len(options) - 1})", "indices count from 0")
    return index


def _plain(text: str) -> str:
    """A text for comparison: its words, lower case, no punctuation ("Nigeria?" = "nigeria")."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def positions(n: int) -> tuple[str, ...]:
    """The label set of a candidate task whose largest example has `n` candidates."""
    return tuple(str(i) for i in range(n))


def ragged(rows: Sequence[dict]):
    """The flat candidate list of a batch of rows, with each candidate's row (`owner`) and its
    position in its row (`slot`)."""
    import torch

    counts = [len(r["candidates"]) for r in rows]
    flat = [c for r in rows for c in r["candidates"]]
    owner = torch.arange(len(rows)).repeat_interleave(torch.tensor(counts))
    slot = torch.cat([torch.arange(n) for n in counts]) if counts else torch.empty(0, dtype=torch.long)
    return flat, owner, slot


def spread(values, owner, slot, n_rows: int, width: int):
    """Flat per-candidate scores -> (rows, width), -inf where a row has no candidate: the softmax
    over each row is over its own candidates only."""
    import torch

    out = torch.full((n_rows, width), float("-inf"), dtype=values.dtype, device=values.device)
    return out.index_put((owner.to(values.device), slot.to(values.device)), values)


# -- boxes: referring expressions -----------------------------------------------------------------
BOX_HINT = "give each row's boxes as a list of [x, y, w, h] in pixels (COCO's convention), or a JSON string of one"
MIN_IOU = 0.5  # the referring-expression convention: a box is right at IoU >= 0.5 with the gold one
EDGE = 1.0  # COCO boxes may overrun the image by rounding: a pixel of slack


def _json_list(value, where: str, column: str, hint: str):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise DataError(f"{where}: column {column!r} holds {value[:40]!r}, not a JSON list", hint) from None
    return value


def parse_box(value, where: str, column: str) -> list[float]:
    """One box [x, y, w, h] (numbers; a JSON string of them)."""
    value = _json_list(value, where, column, BOX_HINT)
    if (not isinstance(value, (list, tuple)) or len(value) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise DataError(f"{where}: column {column!r} holds {str(value)[:60]!r}, not a box [x, y, w, h]", BOX_HINT)
    return [float(v) for v in value]


def parse_boxes(value, size: tuple[int, int], where: str, column: str) -> list[list[float]]:
    """One example's candidate boxes, checked against its image's (width, height): each has an area
    and lies in the image."""
    value = _json_list(value, where, column, BOX_HINT)
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: column {column!r} holds a {type(value).__name__}, not a list of boxes", BOX_HINT)
    boxes = [parse_box(b, where, column) for b in value]
    if len(boxes) < 2:
        raise DataError(f"{where}: {len(boxes)} box in column {column!r}: an example needs two or more candidates "
                        "to choose from")
    width, height = size
    for i, (x, y, w, h) in enumerate(boxes):
        if not (w > 0 and h > 0):
            raise DataError(f"{where}: box {i} {[x, y, w, h]} has no area (w and h must be > 0)", BOX_HINT)
        if x < -EDGE or y < -EDGE or x + w > width + EDGE or y + h > height + EDGE:
            raise DataError(f"{where}: box {i} {[x, y, w, h]} lies outside its {width}x{height} image", BOX_HINT)
    return boxes


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x, y, w, h] boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def gold_box_position(label, boxes: Sequence[Sequence[float]], where: str, column: str) -> int:
    """The gold candidate of a box task: a 0-based index, or a box matched to the candidate of
    highest IoU (at least MIN_IOU: a gold box that no candidate overlaps names none of them)."""
    if isinstance(label, str) and label.strip().startswith("[") or isinstance(label, (list, tuple)):
        gold = parse_box(label, where, column)
        overlaps = [iou(gold, b) for b in boxes]
        best = max(range(len(boxes)), key=overlaps.__getitem__)
        if overlaps[best] < MIN_IOU:
            raise DataError(f"{where}: the gold box {gold} overlaps no candidate at IoU >= {MIN_IOU} (best "
                            f"{overlaps[best]:.2f}, box {best})", "give the gold as an index into the boxes, or "
                            "add the gold box to the candidates")
        return best
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if isinstance(label, str) and re.fullmatch(r"\s*-?\d+\s*", label):
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool):
        raise DataError(f"{where}: the label in column {column!r} is {str(label)[:40]!r}: give the gold box as "
                        "its 0-based index or as a box [x, y, w, h]")
    if not 0 <= label < len(boxes):
        raise DataError(f"{where}: gold index {label} is out of range for its {len(boxes)} boxes "
                        f"(0 to {len(boxes) - 1})", "indices count from 0")
    return label


def iou_hits(rows: Sequence[dict], predicted) -> list[bool]:
    """Whether each row's predicted box overlaps its gold box at IoU >= MIN_IOU (a box task's
    second accuracy: a near-duplicate candidate of the gold counts)."""
    return [iou(r["candidates"][int(p)], r["candidates"][r["label"]]) >= MIN_IOU for r, p in zip(rows, predicted)]
