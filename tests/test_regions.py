"""Referring expressions: an image, an expression and candidate boxes; the answer is the named box.
Boxes are candidates like answer texts (pizoo.candidates), seen by the image tower as regions of
the image (pizoo.inputs.regions), on the tiny CLIP and the tiny dual encoder."""

import io
import json

import helpers
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pizoo.candidates import gold_box_position, iou, parse_boxes
from pizoo.cli import app
from pizoo.data import Examples
from pizoo.errors import DataError
from pizoo.experts import KINDS
from pizoo.fisher import fisher_diag
from pizoo.models import ExpertModel

runner = CliRunner()
COLOURS = {"red": (230, 30, 30), "blue": (30, 30, 230), "green": (30, 200, 30)}
W, H = 48, 32


def cli(root, *args):
    return runner.invoke(app, ["--zoo", str(root), *map(str, args)])


@pytest.fixture(scope="session")
def duals(tmp_path_factory):
    return {"clip": helpers.tiny_clip(tmp_path_factory.mktemp("tiny-clip-r")),
            "dual": helpers.tiny_dual(tmp_path_factory.mktemp("tiny-dual-r"))}


def scene(rng, n_objects: int) -> tuple[bytes, list[list[float]], list[str]]:
    """A grey image with `n_objects` coloured squares side by side, their boxes and colours."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (W, H), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    names = list(rng.choice(list(COLOURS), size=n_objects, replace=n_objects > len(COLOURS)))
    boxes = []
    slot = W // n_objects
    for i, name in enumerate(names):
        side = int(rng.integers(6, min(slot, H) - 1))
        x, y = i * slot + int(rng.integers(0, slot - side)), int(rng.integers(0, H - side))
        draw.rectangle([x, y, x + side - 1, y + side - 1], fill=COLOURS[name])
        boxes.append([float(x), float(y), float(side), float(side)])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue(), boxes, names


def ref_rows(n: int, seed: int, gold_as: str = "index") -> list[dict]:
    """Which box does the colour name? 2 to 4 objects, the named colour once in each scene."""
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:
        image, boxes, names = scene(rng, int(rng.integers(2, 5)))
        unique = [c for c in COLOURS if names.count(c) == 1]
        if not unique:
            continue
        word = unique[int(rng.integers(len(unique)))]
        gold = names.index(word)
        rows.append({"image": image, "expression": word, "boxes": boxes,
                     "gold": gold if gold_as == "index" else json.dumps(boxes[gold])})
    return rows


def write(rows, path):
    import pandas as pd

    pd.DataFrame(rows).to_parquet(path)
    return path


def ref_examples(rows) -> tuple[Examples, list[int]]:
    return (Examples([r["expression"] for r in rows], None, [str(r["gold"]) for r in rows],
                     [r["image"] for r in rows], None, [r["boxes"] for r in rows]), [r["gold"] for r in rows])


def test_boxes_and_gold_are_read_as_coco_has_them():
    assert parse_boxes("[[0, 0, 4, 4], [5, 5, 2, 3]]", (10, 10), "r", "b") == [[0, 0, 4, 4], [5, 5, 2, 3]]
    assert iou([0, 0, 4, 4], [2, 0, 4, 4]) == pytest.approx(8 / 24)
    boxes = [[0, 0, 4, 4], [5, 5, 2, 3]]
    assert [gold_box_position(g, boxes, "r", "g") for g in (1, "1", 1.0, [5, 5, 2, 3], "[5.2, 5, 2, 3]")] == [1] * 5
    for bad, msg in ((2, "out of range"), ([9, 9, 1, 1], "overlaps no candidate"), ("left", "0-based index")):
        with pytest.raises(DataError, match=msg):
            gold_box_position(bad, boxes, "row 1", "gold")
    for bad, msg in (([[0, 0, 4, 4]], "needs two or more"), ([[0, 0, 0, 4], [1, 1, 2, 2]], "no area"),
                     ([[0, 0, 4, 4], [8, 8, 5, 5]], "outside its 10x10 image"), ("boxes", "not a JSON list"),
                     ([[0, 0, 4], [1, 1, 2, 2]], "not a box"), (7, "not a list of boxes")):
        with pytest.raises(DataError, match=msg):
            parse_boxes(bad, (10, 10), "row 1", "boxes")


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("dual", ["clip", "dual"])
def test_fast_fisher_equals_the_batch1_oracle_when_scenes_have_different_numbers_of_boxes(kind, dual, duals,
                                                                                         tmp_path):
    zoo = helpers.new_zoo(tmp_path / "z", duals[dual], kind, "match")
    em = ExpertModel(zoo.spec, ("0", "1", "2", "3"), head_seed=0)
    probe = em.kind.probe({n: p.shape for n, p in em.expert.items()}, seed=0)
    with torch.no_grad():
        for n, t in probe.items():
            em.expert[n].copy_(t)
    ex, ys = ref_examples(ref_rows(10, 3))
    rows = em.encode(ex, ys)
    assert {len(r["candidates"]) for r in rows} >= {2, 3}
    fast = fisher_diag(em, rows, batch_size=4)
    slow = fisher_diag(em, rows, method="loop")
    assert set(fast) == set(slow) == set(em.expert)
    for n in slow:
        rel = float((fast[n] - slow[n]).norm() / slow[n].norm().clamp(min=1e-30))
        assert rel <= 1e-5, (n, rel)
    if kind != "prompt":  # the regions reach the vision tower's expert tensors
        assert any("vision_model." in n and float(slow[n].abs().sum()) > 0 for n in slow)


@pytest.mark.parametrize("dual,region", [("clip", "crop"), ("clip", "blur"), ("dual", "crop")])
def test_a_referring_task_trains_reloads_and_reports_accuracy_at_iou(dual, region, duals, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "z", duals[dual], "lora", "match")
    if region != "crop":
        r = cli(tmp_path / "z2", "init", "--base-model", duals[dual], "--head", "match", "--region", region)
        assert r.exit_code == 0, r.output
        from pizoo.zoo import Zoo

        zoo = Zoo(tmp_path / "z2")
        assert zoo.spec.head_options["region"] == region
    train = write(ref_rows(120, 0), tmp_path / "ref.parquet")
    held = write(ref_rows(60, 1, gold_as="box"), tmp_path / "ref-eval.parquet")
    args = ["--data", train, "--eval-data", held, "--image", "image", "--text", "expression", "--boxes", "boxes",
            "--label", "gold"]
    r = cli(zoo.root, "add-task", "ref", *args, "--epochs", 12, "--lr", 5e-3, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)["metrics"]
    # chance over 2-4 boxes is about 0.36: the expert learns which region the colour names
    assert m["accuracy"] > 0.7 and m["accuracy"] > m["accuracy_zero_shot"] + 0.2, m
    r = cli(zoo.root, "eval", "ref", "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    assert ev["accuracy"] == pytest.approx(m["accuracy"])
    # the squares never overlap: a box is right at IoU >= 0.5 exactly when it is the gold one
    assert ev["accuracy_iou50"] == pytest.approx(ev["accuracy"])
    from pizoo.tasks import task_data

    td = task_data(zoo, "ref")
    assert {len(b) for b in td.eval.boxes} >= {2, 3} and td.eval.images is not None


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_box_task_interpolates_with_an_image_task_and_exports(kind, duals, tmp_path):
    """Every kind on a box task: box and fixed-label tasks share one zoo (similar, interpolate both
    ways), and each export a kind has computes the same scores of every box with transformers/peft
    alone as pizoo does."""
    from test_images import exports, plain_features, plain_model  # helpers only (not collected twice)

    from pizoo.candidates import spread
    from pizoo.experts import get_kind
    from pizoo.tasks import load_task_model, task_data

    zoo = helpers.new_zoo(tmp_path / "z", duals["dual"], kind, "match")
    img = helpers.image_task(tmp_path, "lr", 60, 0, name="lr")
    helpers.train(zoo, "lr", img, epochs=2, columns=helpers.image_columns())
    train = write(ref_rows(60, 0), tmp_path / "ref.parquet")
    lr = str(get_kind(kind).default_lr)
    r = cli(zoo.root, "add-task", "ref", "--data", train, "--image", "image", "--text", "expression", "--boxes",
            "boxes", "--label", "gold", "--epochs", 3, "--lr", lr, "--device", "cpu")
    assert r.exit_code == 0, r.output
    r = cli(zoo.root, "similar", "ref", "--json")
    assert r.exit_code == 0, r.output
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["task"] == "lr" and 0 <= row["fit_accuracy"] <= 1
    r = cli(zoo.root, "interpolate", "--target", "ref", "--with", "lr", "--steps", 3, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    r = cli(zoo.root, "interpolate", "--target", "lr", "--with", "ref", "--steps", 3, "--device", "cpu", "--as",
            "lr-ref", "--json")
    assert r.exit_code == 0, r.output
    r = cli(zoo.root, "eval", "ref", "--on", "ref", "--json")
    assert r.exit_code == 0 and "accuracy_iou50" in json.loads(r.stdout), r.output
    em, m = load_task_model(zoo, "ref")
    td = task_data(zoo, "ref", m)
    batch = em.collate(em.encode(td.train, td.label_ids(td.train))[:3])
    with torch.no_grad():
        ours = em.head_type.label_scores(em, batch, None)
    finite = torch.isfinite(ours)
    pooling = zoo.spec.head_options["pooling"]
    for fmt, out in exports(zoo, "ref", get_kind(kind), tmp_path):
        model = plain_model(duals["dual"], out, fmt, get_kind(kind))
        with torch.no_grad():
            x = torch.nn.functional.normalize(plain_features(model, batch["inputs"], pooling), dim=-1)
            y = torch.nn.functional.normalize(plain_features(model, batch["label_inputs"], pooling), dim=-1)
        owner = batch["label_owner"]
        theirs = spread(zoo.spec.head_options["scale"] * (x[owner] * y).sum(-1), owner, batch["label_slot"], 3,
                        len(em.labels))
        assert torch.equal(finite, torch.isfinite(theirs)), fmt
        assert float((ours[finite] - theirs[finite]).abs().max()) <= 1e-4, (fmt, ours, theirs)


def test_bad_box_data_is_one_line_and_writes_nothing(duals, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "z", duals["clip"], "lora", "match")
    before = helpers.tree(zoo.root)
    good = ref_rows(20, 0)
    first = good[0]
    cases = {
        "out-of-range": ({**first, "gold": 7}, "out of range"),
        "outside": ({**first, "boxes": [[0, 0, 4, 4], [40, 20, 20, 20]]}, "outside its 48x32 image"),
        "no-area": ({**first, "boxes": [[0, 0, 4, 4], [4, 4, 0, 3]]}, "no area"),
        "one-box": ({**first, "boxes": [[0, 0, 4, 4]], "gold": 0}, "needs two or more"),
        "not-boxes": ({**first, "boxes": "left"}, "not a JSON list"),
    }
    args = ["--image", "image", "--text", "expression", "--boxes", "boxes", "--label", "gold", "--epochs", 1]
    for name, (row, msg) in cases.items():
        rows = [row] + good[1:]
        if name == "not-boxes":  # a column of strings throughout (parquet keeps one type per column)
            rows = [{**r, "boxes": json.dumps(r["boxes"])} for r in good[1:]]
            rows.insert(0, row)
        f = write(rows, tmp_path / f"{name}.parquet")
        r = cli(zoo.root, "add-task", name, "--data", f, *args)
        assert r.exit_code == 1 and msg in r.stderr and "row 1" in r.stderr, (name, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    f = write(good, tmp_path / "good.parquet")
    r = cli(zoo.root, "add-task", "noimage", "--data", f, "--text", "expression", "--boxes", "boxes")
    assert r.exit_code == 2 and "--image" in r.stderr, r.stderr
    r = cli(zoo.root, "add-task", "both", "--data", f, "--image", "image", "--text", "expression", "--boxes", "boxes",
            "--choices", "boxes")
    assert r.exit_code == 2 and "not both" in r.stderr, r.stderr
    assert helpers.tree(zoo.root) == before


def test_boxes_need_the_match_head_on_a_dual_encoder(bert_dir, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "z", bert_dir, head="classification")
    f = write(ref_rows(20, 0), tmp_path / "ref.parquet")
    r = cli(zoo.root, "add-task", "ref", "--data", f, "--image", "image", "--text", "expression", "--boxes", "boxes",
            "--label", "gold", "--epochs", 1)
    assert r.exit_code == 2 and "own candidates" in r.stderr, r.stderr


def coco(tmp_path, n_images: int = 6):
    """A COCO-style dataset in the refer toolkit's form: an image folder, instances.json (every
    object's box) and the refs (as JSON: the toolkit's refs(*).p converted), two expressions each."""
    rng = np.random.default_rng(0)
    (tmp_path / "train2014").mkdir()
    images, anns, refs = [], [], []
    for i in range(n_images):
        image, boxes, names = scene(rng, 3)
        fname = f"COCO_train2014_{i:012d}.png"
        (tmp_path / "train2014" / fname).write_bytes(image)
        images.append({"id": 100 + i, "file_name": fname, "width": W, "height": H})
        for j, b in enumerate(boxes):
            anns.append({"id": 1000 + 10 * i + j, "image_id": 100 + i, "bbox": b, "category_id": 1})
        target = int(rng.integers(3))
        refs.append({"ref_id": i, "ann_id": 1000 + 10 * i + target, "image_id": 100 + i,
                     "split": "train" if i < n_images - 2 else "val",
                     "sentences": [{"sent": names[target], "tokens": [names[target]]},
                                   {"sent": f"the {names[target]}", "tokens": ["the", names[target]]}]})
    (tmp_path / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    return tmp_path, refs, anns


def test_refcoco_as_the_refer_toolkit_and_the_hub_publish_it(duals, tmp_path):
    root, refs, anns = coco(tmp_path)
    zoo = helpers.new_zoo(tmp_path / "z", duals["clip"], "lora", "match")
    out = tmp_path / "refcoco-train.parquet"
    r = cli(zoo.root, "convert-refer", "--refs", root / "refs.json", "--instances", root / "instances.json",
            "--images", root / "train2014", "--split", "train", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["rows"] == 8 and summary["refs"] == 4 and summary["most_boxes"] == 3  # 2 expressions per ref
    import pandas as pd

    df = pd.read_parquet(out)
    first = df.iloc[0]
    gold_ann = next(a for a in anns if a["id"] == refs[0]["ann_id"])
    assert list(first["boxes"][first["gold"]]) == gold_ann["bbox"] and first["expression"] == refs[0]["sentences"][0]["sent"]
    r = cli(zoo.root, "add-task", "refcoco", "--data", out, "--image", "image", "--text", "expression", "--boxes",
            "boxes", "--label", "gold", "--epochs", 1, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    # the hub's jxu124/refcoco rows: ann_id, image_id, split, captions (no sentences), read as parquet
    hub = tmp_path / "hub.parquet"
    pd.DataFrame([{"ann_id": x["ann_id"], "image_id": x["image_id"], "split": x["split"],
                   "captions": [s["sent"] for s in x["sentences"]]} for x in refs]).to_parquet(hub)
    r = cli(zoo.root, "convert-refer", "--refs", hub, "--instances", root / "instances.json", "--images",
            root / "train2014", "--split", "val", "--out", tmp_path / "val.parquet", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["rows"] == 4, r.output
    # bad input: one line, nothing written
    bad = tmp_path / "bad-refs.json"
    bad.write_text(json.dumps([{**refs[0], "ann_id": 5}]))
    r = cli(zoo.root, "convert-refer", "--refs", bad, "--instances", root / "instances.json", "--images",
            root / "train2014", "--out", tmp_path / "bad.parquet")
    assert r.exit_code == 1 and "not among image" in r.stderr and not (tmp_path / "bad.parquet").exists()
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli(zoo.root, "convert-refer", "--refs", root / "refs.json", "--instances", root / "instances.json",
            "--images", root / "train2014", "--out", zoo.root / "x.parquet")
    assert r.exit_code == 2 and "inside a zoo" in r.stderr


def test_the_packaged_scene_family_is_what_each_task_says(tmp_path):
    """demo/scenes.py on stand-in glyphs (the demo reads MNIST): boxes inside the canvas and apart,
    the gold's position uniform, RefCOCO+-style expressions without location words, RefCOCOg-style
    ones relational, questions answered from the scene's other objects; pizoo reads every file."""
    import sys
    from pathlib import Path

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "demo"))
    import scenes

    from pizoo.data import Columns, prepare

    rng = np.random.default_rng(0)
    glyphs = (rng.random((40, 28, 28)) * 255).astype("uint8")
    labels = np.arange(40) % 10
    words = {k: str(k) for k in range(10)}
    for task in ("ref", "ref-plus", "ref-g", "scene-qa"):
        rows = scenes.make(task, glyphs, labels, words, 60, seed=1)
        gold = [r["gold" if task != "scene-qa" else "answer"] for r in rows]
        positions = scenes.MAX_OBJECTS - (task == "scene-qa")
        assert sorted(set(gold)) == list(range(positions)) and max(map(gold.count, set(gold))) == 60 // positions
        if task == "scene-qa":
            assert all(r["question"].startswith("what is ") for r in rows)
            path = tmp_path / f"{task}.parquet"
            pd.DataFrame(rows).to_parquet(path)
            td = prepare(path, Columns(text="question", image="image", choices="options", label="answer"))
        else:
            for r in rows:
                boxes = json.loads(r["boxes"])
                assert all(0 <= x and 0 <= y and x + w <= scenes.SIDE and y + h <= scenes.SIDE for x, y, w, h in boxes)
                assert all(iou(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1:])
            texts = [r["expression"] for r in rows]
            if task == "ref-plus":
                assert not any(w in t for t in texts for w in ("left", "right", "top", "bottom", "above", "below"))
            if task == "ref-g":
                assert all(any(rel in t for rel in scenes.RELATIONS) for t in texts)
            path = tmp_path / f"{task}.parquet"
            pd.DataFrame(rows).to_parquet(path)
            td = prepare(path, Columns(text="expression", image="image", boxes="boxes", label="gold"))
        assert len(td.train) + len(td.eval) == 60 and td.labels == tuple(str(i) for i in range(positions))
