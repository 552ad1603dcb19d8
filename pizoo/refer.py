"""RefCOCO-family data in the form it is published: the refer toolkit's (Yu et al.) refs, the COCO
instances JSON and a COCO image folder, made into one table pizoo reads (`add-task --image image
--text expression --boxes boxes --label gold`).

- refs: the toolkit's refs(unc).p / refs(umd).p / refs(google).p converted to JSON (pizoo never
  unpickles), a list of {ref_id, ann_id, image_id, split, sentences: [{sent, ...}], ...}; or any
  table `datasets` reads with those columns (the hub's jxu124/refcoco parquet has ann_id, image_id,
  split, sentences and captions, a list of the expressions).
- instances.json: COCO's {"images": [{id, file_name, width, height}], "annotations": [{id,
  image_id, bbox: [x, y, w, h], ...}]}: every annotated object of an image is a candidate, as in
  the referring-expression benchmarks' ground-truth setting.
- the image folder holds the images by their `file_name`.

Each expression of a ref becomes one row: the image's path, the expression, every box of the image
and the gold box's index among them."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pizoo.data import load_rows
from pizoo.errors import DataError
from pizoo.zoo import atomic_write

HINT = "the refer toolkit's refs as JSON (or a table with ann_id, image_id, sentences), COCO's instances.json"


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{what} {path} is not readable JSON ({str(e)[:80]})", HINT) from None


def read_refs(path: Path) -> list[dict]:
    """The refs: a JSON list (the toolkit's refs converted), or a table datasets reads."""
    if path.suffix.lower() == ".json":
        doc = _read_json(path, "refs file")
        if isinstance(doc, dict) and "refs" in doc:
            doc = doc["refs"]
        if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
            raise DataError(f"refs file {path} is not a list of refs", HINT)
        return doc
    return list(load_rows(path))


def expressions(ref: dict) -> list[str]:
    """A ref's expressions: its sentences' `sent` (the toolkit), or its captions (jxu124/refcoco)."""
    sents = ref.get("sentences")
    if isinstance(sents, str):  # a JSON string in a csv cell
        try:
            sents = json.loads(sents)
        except ValueError:
            sents = None
    if sents:
        return [str(s["sent"] if isinstance(s, dict) else s).strip() for s in sents]
    return [str(c).strip() for c in ref.get("captions") or []]


def refer_rows(refs_path: Path, instances_path: Path, images_dir: Path, split: str | None = None) -> list[dict]:
    """One row per expression: {"image": path, "expression", "boxes", "gold", "ref_id", "split"}."""
    inst = _read_json(instances_path, "instances file")
    if not isinstance(inst, dict) or not isinstance(inst.get("images"), list) or \
            not isinstance(inst.get("annotations"), list):
        raise DataError(f"instances file {instances_path} lacks COCO's images and annotations lists", HINT)
    files = {im["id"]: im["file_name"] for im in inst["images"]}
    anns: dict[Any, list[dict]] = defaultdict(list)
    for a in inst["annotations"]:
        anns[a["image_id"]].append(a)
    rows = []
    for n, ref in enumerate(read_refs(refs_path), 1):
        if split is not None and ref.get("split") != split:
            continue
        where = f"{refs_path} ref {ref.get('ref_id', n)}"
        for key in ("ann_id", "image_id"):
            if key not in ref:
                raise DataError(f"{where} has no {key}", HINT)
        image_id = ref["image_id"]
        if image_id not in files:
            raise DataError(f"{where}: image {image_id} is not in {instances_path}", "use the instances.json of the "
                            "same dataset as the refs")
        objects = anns[image_id]
        ids = [a["id"] for a in objects]
        if ref["ann_id"] not in ids:
            raise DataError(f"{where}: its object {ref['ann_id']} is not among image {image_id}'s annotations")
        path = images_dir / files[image_id]
        if not path.is_file():
            raise DataError(f"{where}: image file {path} does not exist", "pass --images the COCO image folder "
                            "(e.g. train2014)")
        for text in expressions(ref):
            if text:
                rows.append({"image": str(path.resolve()), "expression": text,
                             "boxes": [[float(v) for v in a["bbox"]] for a in objects],
                             "gold": ids.index(ref["ann_id"]), "ref_id": ref.get("ref_id"),
                             "split": ref.get("split")})
    if not rows:
        raise DataError(f"no expressions in {refs_path}" + (f" for split {split!r}" if split else ""),
                        "check --split (the toolkit's are train, val, test, testA, testB)")
    return rows


def write_refer_table(refs: Path, instances: Path, images: Path, out: Path, split: str | None = None) -> dict:
    """Write the rows as parquet at `out` (atomically); returns a summary."""
    import pandas as pd

    rows = refer_rows(refs, instances, images, split)
    atomic_write(out, lambda tmp: pd.DataFrame(rows).to_parquet(tmp))
    return {"out": str(out), "rows": len(rows), "refs": len({r["ref_id"] for r in rows}),
            "images": len({r["image"] for r in rows}), "most_boxes": max(len(r["boxes"]) for r in rows),
            "add_task": f"pizoo add-task NAME --data {out} --image image --text expression --boxes boxes --label gold"}
