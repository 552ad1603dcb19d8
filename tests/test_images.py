"""Images in the zoo: image tasks beside text tasks on one dual encoder (tiny CLIP, and a tiny
DINOv2 + BERT VisionTextDualEncoderModel: the shape of the packaged multimodal default)."""

import io
import json

import helpers
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from pizoo.cli import app
from pizoo.data import Columns, Examples
from pizoo.embed import similar
from pizoo.errors import DataError, ModelError, UsageError
from pizoo.evaluate import evaluate_task
from pizoo.experts import KINDS, get_kind
from pizoo.fisher import fisher_diag
from pizoo.interpolate import interpolate_task
from pizoo.models import ExpertModel
from pizoo.tasks import load_task_model
from pizoo.train import TrainConfig

runner = CliRunner()
DUALS = ("clip", "dual")
IMAGE_KINDS = sorted(KINDS)


def cli(root, *args):
    return runner.invoke(app, ["--zoo", str(root), *map(str, args)])


@pytest.fixture(scope="session")
def duals(tmp_path_factory):
    return {"clip": helpers.tiny_clip(tmp_path_factory.mktemp("tiny-clip")),
            "dual": helpers.tiny_dual(tmp_path_factory.mktemp("tiny-dual"))}


@pytest.fixture(scope="session")
def image_files(tmp_path_factory):
    """Image tasks on two rules (left/right, top/bottom), and a text task."""
    tmp = tmp_path_factory.mktemp("image-data")
    files = {name: (helpers.image_task(tmp, rule, 80, seed, name=name),
                    helpers.image_task(tmp, rule, 40, seed + 1000, name=name + "-eval"))
             for name, rule, seed in (("lr-a", "lr", 0), ("lr-b", "lr", 1), ("tb", "tb", 2))}
    files["text"] = helpers.task_files(tmp, "a", "match", n=80, n_eval=40)
    return tmp, files


def image_examples(n: int, rule: str = "lr", seed: int = 0) -> tuple[Examples, list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    ys = [i % 2 for i in range(n)]
    return Examples(None, None, ["?"] * n, [helpers.image_bytes(rule, y, rng) for y in ys]), ys


def _train_image(zoo, name, files, epochs=4, seed=0):
    train, held = files[name]
    return helpers.train(zoo, name, train, held, epochs=epochs, seed=seed, columns=helpers.image_columns())


# -- every kind on both dual encoders ----------------------------------------------------------------
@pytest.mark.parametrize("kind", IMAGE_KINDS)
@pytest.mark.parametrize("dual", DUALS)
def test_fisher_fast_path_equals_batch1_oracle_on_images_and_texts(kind, dual, duals, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "z", duals[dual], kind, "match")
    em = ExpertModel(zoo.spec, helpers.CLASS_LABELS)
    probe = em.kind.probe({n: p.shape for n, p in em.expert.items()}, seed=0)
    with torch.no_grad():
        for n, t in probe.items():
            em.expert[n].copy_(t)
    images, ys = image_examples(12)
    texts = [" ".join(r["text"].split()[: 1 + i % 8]) for i, r in enumerate(helpers.make_rows("a", 12, 0))]
    for rows in (em.encode(images, ys), em.encode(helpers.ex(texts), ys)):
        fast, slow = fisher_diag(em, rows, batch_size=5), fisher_diag(em, rows, method="loop")
        assert set(fast) == set(slow) == set(em.expert)
        for n in slow:
            rel = float((fast[n] - slow[n]).norm() / slow[n].norm().clamp(min=1e-30))
            assert rel <= 1e-5, (n, rel)
    # every tensor is reached by one modality or the other (image rows reach the vision tower)
    img = fisher_diag(em, em.encode(images, ys), batch_size=6)
    txt = fisher_diag(em, em.encode(helpers.ex(texts), ys), batch_size=6)
    assert all(float(img[n].abs().sum() + txt[n].abs().sum()) > 0 for n in em.expert)
    if kind == "prompt":  # the text tower's prompt: image rows reach it through their label texts
        assert float(img["prompt_embeddings"].abs().sum()) > 0
    else:
        assert any("vision_model." in n and float(img[n].abs().sum()) > 0 for n in em.expert)


@pytest.mark.parametrize("kind", IMAGE_KINDS)
@pytest.mark.parametrize("dual", DUALS)
def test_every_kind_trains_reloads_interpolates_across_modalities_and_exports(kind, dual, duals, image_files,
                                                                                tmp_path):
    tmp, files = image_files
    zoo = helpers.new_zoo(tmp_path / "z", duals[dual], kind, "match")
    m = _train_image(zoo, "lr-a", files, epochs=20)  # the tiny CLIP starts with near-equal image features
    # a prompt moves only the label texts' features (CoOp), against image features that a tiny random
    # tower makes nearly equal: measured on the tiny CLIP, loss 0.735 -> 0.691 (accuracy 0.45 -> 0.55)
    assert m.metrics["loss_last"] < (0.97 if kind == "prompt" else 0.9) * m.metrics["loss_first"], m.metrics
    if kind != "adalink":  # measured: on the tiny random towers AdaLink's loss falls (CLIP 2.2 -> 0.74)
        # but its accuracy stays at the zero-shot one within 30 steps; LoRA and adapters learn the rule
        assert m.metrics["accuracy"] > m.metrics["accuracy_zero_shot"] or m.metrics["accuracy"] >= 0.9, m.metrics
    # reloading gives what was measured
    again = evaluate_task(zoo, "lr-a")
    assert again.accuracy == pytest.approx(m.metrics["accuracy"], abs=1e-6)
    # a text task in the same zoo, and an interpolation that mixes the text expert into the image one
    train, held = files["text"]
    helpers.train(zoo, "text", train, held, epochs=2)
    rec = interpolate_task(zoo, "lr-a", TrainConfig(steps=4, lr=get_kind(kind).default_lr, device="cpu"),
                           with_=["text"], keep_best=False, embed=False)
    assert [s["task"] for s in rec.provenance["interpolation"]["sources"]] == ["text"]
    assert 0 <= rec.metrics["accuracy"] <= 1
    # exports that plain transformers/peft load compute the same image and text features
    kind_obj = get_kind(kind)
    images, ys = image_examples(4, seed=5)
    em, _ = load_task_model(zoo, "lr-a")
    pixels = helpers_batch(em, images, ys)
    texts = helpers_batch(em, helpers.ex(["w1 w2 w3", "w9"]), [0, 1])
    with torch.no_grad():
        ours = [em.head_type.embed(em, b, None) for b in (pixels, texts)]
    # peft's prompt tuning passes inputs_embeds, which CLIP's text model does not take
    refused = {"peft"} if (kind, dual) == ("prompt", "clip") else set()
    for fmt, out in exports(zoo, "lr-a", kind_obj, tmp_path, refused):
        model = plain_model(duals[dual], out, fmt, kind_obj)
        with torch.no_grad():
            theirs = [plain_features(model, b, zoo.spec.head_options["pooling"]) for b in (pixels, texts)]
        for a, b in zip(ours, theirs):
            assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max()))


def exports(zoo, task, kind, tmp_path, refused=()):
    """Export `task` in both formats: the ones the kind has must succeed (yielded as (fmt, folder)),
    the others (and those in `refused`) must be refused in one line without writing anything."""
    for fmt in ("peft", "merged"):
        out = tmp_path / f"out-{fmt}"
        r = cli(zoo.root, "export", task, "--out", out, "--format", fmt)
        if fmt in refused or not (kind.peft_type is not None if fmt == "peft" else kind.foldable):
            lines = [line for line in r.stderr.splitlines() if line.strip()]
            assert r.exit_code == 1 and not out.exists() and lines[0].startswith("error:"), r.output
            continue
        assert r.exit_code == 0, r.output
        yield fmt, out


def helpers_batch(em, ex, ys):
    from pizoo.heads.base import pad

    return pad(em, [{k: v for k, v in r.items() if k != "label"} for r in em.encode(ex, ys)])


def plain_model(base, out, fmt, kind):
    """What a user without pizoo loads: the peft adapter on the base (a prompt: on its text tower,
    as the export's model card says), or the merged folder."""
    from peft import PeftModel
    from transformers import AutoModel

    if fmt == "merged":
        return AutoModel.from_pretrained(out).eval()
    model = AutoModel.from_pretrained(base).eval()
    sub = kind.peft_module(model.config.to_dict())
    if not sub:
        return PeftModel.from_pretrained(model, out).eval().get_base_model()
    assert f"PeftModel.from_pretrained(base.{sub}, " in (out / "README.md").read_text()
    tower = PeftModel.from_pretrained(getattr(model, sub), out).eval()
    n = tower.peft_config["default"].num_virtual_tokens

    class Tower(torch.nn.Module):  # the prompt's positions dropped from the output, as a user pools
        def forward(self, **kw):
            kw.pop("token_type_ids", None)  # peft ignores them under a prompt (and warns); pizoo too
            out = tower(**kw)
            out.last_hidden_state = out.last_hidden_state[:, n:]
            return out

    model.text_model = Tower()
    return model


def plain_features(model, batch, pooling):
    """A dual encoder's features in its shared space, written with transformers alone."""
    if "pixel_values" in batch:
        return model.visual_projection(model.vision_model(pixel_values=batch["pixel_values"]).pooler_output)
    out = model.text_model(**batch)
    if pooling == "pooler":
        pooled = out.pooler_output
    else:
        mask = batch["attention_mask"][:, :, None].float()
        pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1)
    return model.text_projection(pooled)


def test_a_prompt_on_a_dual_encoder_is_learned_context_for_the_text_tower_only(duals, tmp_path):
    """CoOp: the prompt changes text features (label texts and text inputs), never image features;
    long texts are cut to leave room for it in the text tower's positions (tiny CLIP: 64)."""
    zoo = helpers.new_zoo(tmp_path / "z", duals["clip"], "prompt", "match")
    em = ExpertModel(zoo.spec, helpers.CLASS_LABELS)
    assert em.max_length == 64 - 8
    images, ys = image_examples(3)
    long_text = " ".join(f"w{i % 20}" for i in range(200))
    pixels, texts = helpers_batch(em, images, ys), helpers_batch(em, helpers.ex([long_text, "w1 w2"]), [0, 1])
    assert texts["input_ids"].shape[1] == 56
    gen = torch.Generator().manual_seed(0)  # random rows (a constant shift is lost in the layer norms)
    other = {n: torch.randn(t.shape, generator=gen) for n, t in em.state().items()}
    with torch.no_grad():
        img = [em.head_type.embed(em, pixels, p) for p in (None, other)]
        txt = [em.head_type.embed(em, texts, p) for p in (None, other)]
    assert torch.equal(img[0], img[1])
    assert float((txt[0] - txt[1]).abs().max()) > 1e-3


def test_rows_keep_encoded_images_and_batches_hold_the_pixels(duals, tmp_path):
    """A task's rows keep each image as its bytes; the processor runs one batch at a time."""
    zoo = helpers.new_zoo(tmp_path / "z", duals["dual"], "lora", "match")
    em = ExpertModel(zoo.spec, helpers.CLASS_LABELS)
    images, ys = image_examples(5)
    rows = em.encode(images, ys)
    assert all(isinstance(r["image"], bytes) and set(r) == {"image", "label"} for r in rows)
    batch = em.collate(rows[:3])
    pixels = batch["inputs"]["pixel_values"]
    assert pixels.dtype == torch.float32 and pixels.dim() == 4 and pixels.shape[:2] == (3, 3)


def test_dual_encoder_defaults(duals, tmp_path):
    """LoRA on both towers' attention and on the projections; adapters in both towers' layers;
    AdaLink one per modality; CLIP pools its text at the end token, the packaged shape by mean."""
    clip = helpers.new_zoo(tmp_path / "c", duals["clip"], "lora", None)
    assert clip.spec.head == "match" and clip.spec.head_options["pooling"] == "pooler"
    assert clip.spec.options["target_modules"] == ["q_proj", "text_projection", "v_proj", "visual_projection"]
    dual = helpers.new_zoo(tmp_path / "d", duals["dual"], "adalink", "match")
    assert dual.spec.head_options["pooling"] == "mean"
    em = ExpertModel(dual.spec, ())
    sites = {em.kind.site(n) for n in em.expert}
    assert sites == {"input_embeddings", "image_embeddings"}
    adapter = ExpertModel(helpers.new_zoo(tmp_path / "a", duals["dual"], "adapter", "match").spec, ())
    assert {n.split(".")[0] for n in adapter.expert} == {"text_model", "vision_model"}


# -- one zoo, both modalities ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_zoo(tmp_path_factory, duals, image_files):
    tmp, files = image_files
    zoo = helpers.new_zoo(tmp_path_factory.mktemp("mixed") / "zoo", duals["dual"], "lora", "match")
    for i, name in enumerate(("lr-a", "lr-b", "tb")):
        _train_image(zoo, name, files, epochs=6, seed=i)
    train, held = files["text"]
    helpers.train(zoo, "text", train, held, epochs=4)
    return zoo


def test_one_zoo_ranks_and_graphs_across_modalities(mixed_zoo, tmp_path):
    ranked = similar(mixed_zoo, "lr-a", k=3)
    names = [r.task for r in ranked]
    assert set(names) == {"lr-b", "tb", "text"}
    assert names[0] == "lr-b", ranked  # the same rule on other images is the nearest task
    r = cli(mixed_zoo.root, "graph", "--out", tmp_path / "g.png", "--group", "modality", "--json")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "g.png").stat().st_size > 1000
    graph = json.loads(r.stdout)
    assert graph["groups"] == {"lr-a": "image", "lr-b": "image", "tb": "image", "text": "text"}
    order = graph["order"]  # each modality's rows sit together
    assert order.index("text") in (0, len(order) - 1), order
    r = cli(mixed_zoo.root, "graph", "--out", tmp_path / "g.png", "--group", "colour")
    assert r.exit_code == 2 and "--group 'colour' is not one of none, modality, family" in r.stderr


def test_cross_task_eval_of_an_image_expert_on_a_text_task(mixed_zoo):
    """Every expert scores every task, whatever its modality: the label space is shared."""
    res = evaluate_task(mixed_zoo, "lr-a", on="text")
    assert res.n == 40 and 0 <= res.accuracy <= 1


def test_image_split_is_kept_in_the_task_folder(mixed_zoo):
    df = pd.read_parquet(mixed_zoo.file("lr-a", "data/train.parquet"))
    assert list(df.columns) == ["image", "label"] and isinstance(df["image"][0], bytes)
    from PIL import Image

    assert Image.open(io.BytesIO(df["image"][0])).size == (helpers.IMAGE_SIZE, helpers.IMAGE_SIZE)
    record = json.loads((mixed_zoo.task_dir("lr-a") / "task.json").read_text())
    assert record["source"]["columns"]["image"] == "image" and record["source"]["columns"]["text"] is None


# -- data: where images come from, and what is refused -----------------------------------------------
def test_parquet_with_image_bytes_and_datasets_image_feature(duals, tmp_path):
    import datasets
    import numpy as np

    rng = np.random.default_rng(0)
    rows = [{"img": helpers.image_bytes("lr", i % 2, rng), "y": ["neg", "pos"][i % 2]} for i in range(20)]
    pd.DataFrame(rows).to_parquet(tmp_path / "raw.parquet")
    ds = datasets.Dataset.from_dict({"img": [{"bytes": r["img"], "path": None} for r in rows],
                                     "y": [r["y"] for r in rows]}).cast_column("img", datasets.Image())
    ds.to_parquet(str(tmp_path / "feature.parquet"))
    from pizoo.data import prepare

    for f in ("raw.parquet", "feature.parquet"):
        td = prepare(tmp_path / f, Columns(text=None, image="img", label="y"))
        assert td.train.input_type == "image" and len(td.train) + len(td.eval) == 20
        assert td.labels == ("neg", "pos")


def _bad_image_cases(tmp_path):
    good = helpers.image_task(tmp_path, "lr", 6, 0, name="ok")
    rows = pd.read_csv(good)
    missing = rows.copy()
    missing.loc[3, "image"] = "ok/nope.png"
    missing.to_csv(tmp_path / "missing.csv", index=False)
    (tmp_path / "ok" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image at all")
    broken = rows.copy()
    broken.loc[2, "image"] = "ok/broken.png"
    broken.to_csv(tmp_path / "broken.csv", index=False)
    return {"missing": (tmp_path / "missing.csv", "row 4: image file", "does not exist"),
            "broken": (tmp_path / "broken.csv", "row 3: image file", "is not a readable image")}


def test_bad_and_missing_images_are_one_clear_line_and_change_nothing(duals, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "zoo", duals["dual"], "lora", "match")
    before = helpers.tree(zoo.root)
    for name, (f, where, what) in _bad_image_cases(tmp_path).items():
        r = cli(zoo.root, "add-task", name, "--data", f, "--image", "image", "--epochs", "1")
        assert r.exit_code == 1, r.output
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and where in lines[0] and what in lines[0] and str(f) in lines[0], r.stderr
        with pytest.raises(DataError):
            from pizoo.data import prepare

            prepare(f, Columns(text=None, image="image"))
    assert helpers.tree(zoo.root) == before


def test_text_only_model_given_images_is_one_clear_line(bert_dir, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "zoo", bert_dir, "lora", "match")
    f = helpers.image_task(tmp_path, "lr", 8, 0)
    before = helpers.tree(zoo.root)
    r = cli(zoo.root, "add-task", "img", "--data", f, "--image", "image", "--epochs", "1")
    assert r.exit_code == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "has no image processor, so it cannot read images" in lines[0], r.stderr
    assert helpers.tree(zoo.root) == before
    with pytest.raises(ModelError):
        ExpertModel(zoo.spec, helpers.CLASS_LABELS).encode(*image_examples(2))


def test_image_columns_flags(tmp_path):
    with pytest.raises(UsageError, match="needs a --text or an --image"):
        Columns(text=None)
    from pizoo.cli import _columns

    assert _columns(None, None, "label", None, image="path") == Columns(text=None, image="path")
    assert _columns(None, None, "label", None).text == "text"


# -- an image encoder alone: image-only zoos, per-task heads -------------------------------------------
@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory):
    return helpers.tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


@pytest.mark.parametrize("kind", [k for k in IMAGE_KINDS if k != "prompt"])  # no token table: refused below
def test_image_encoder_alone_with_per_task_heads(kind, vit_dir, image_files, tmp_path):
    tmp, files = image_files
    zoo = helpers.new_zoo(tmp_path / "z", vit_dir, kind, None)
    assert zoo.spec.head == "classification"  # no text side to read label texts with
    m = _train_image(zoo, "lr-a", files, epochs=8)
    # a prompt moves only the label texts' features (CoOp), against image features that a tiny random
    # tower makes nearly equal: measured on the tiny CLIP, loss 0.735 -> 0.691 (accuracy 0.45 -> 0.55)
    assert m.metrics["loss_last"] < (0.97 if kind == "prompt" else 0.9) * m.metrics["loss_first"], m.metrics
    assert evaluate_task(zoo, "lr-a").accuracy == pytest.approx(m.metrics["accuracy"], abs=1e-6)
    em, _ = load_task_model(zoo, "lr-a")
    images, ys = image_examples(10, seed=3)
    rows = em.encode(images, ys)
    fast, slow = fisher_diag(em, rows, batch_size=4), fisher_diag(em, rows, method="loop")
    for n in slow:
        assert float((fast[n] - slow[n]).norm() / slow[n].norm().clamp(min=1e-30)) <= 1e-5, n
    pixels = helpers_batch(em, images, ys)
    with torch.no_grad():
        ours = em.forward(pixels).logits
    kind_obj = get_kind(kind)
    for fmt, out in exports(zoo, "lr-a", kind_obj, tmp_path):
        from peft import PeftModel
        from transformers import AutoModelForImageClassification

        model = (PeftModel.from_pretrained(AutoModelForImageClassification.from_pretrained(vit_dir, num_labels=2), out)
                 if fmt == "peft" else AutoModelForImageClassification.from_pretrained(out)).eval()
        assert "AutoModelForImageClassification" in (out / "README.md").read_text()
        with torch.no_grad():
            theirs = model(pixel_values=pixels["pixel_values"]).logits
        assert float((ours - theirs).abs().max()) <= 1e-5 * max(1.0, float(ours.abs().max()))


def test_image_encoder_alone_refuses_text_and_prompts(vit_dir, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "zoo", vit_dir, "lora", None)
    f, _ = helpers.task_files(tmp_path, "a", "classification")
    before = helpers.tree(zoo.root)
    r = cli(zoo.root, "add-task", "words", "--data", f, "--epochs", "1")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and "has no tokenizer, so it cannot read text" in lines[0], r.stderr
    assert helpers.tree(zoo.root) == before
    r = cli(tmp_path / "z2", "init", "--base-model", vit_dir, "--kind", "prompt")
    assert r.exit_code != 0 and "prompt tuning needs a token-embedding table" in r.stderr


def test_hypernetwork_over_image_and_text_tasks_generates_an_image_expert(mixed_zoo, image_files):
    """HyperPELT on a zoo of both modalities: one hypernetwork generates the experts of image tasks
    and text tasks (LoRA on both towers), and a new image task's expert from its data alone."""
    tmp, files = image_files
    zoo = mixed_zoo
    r = cli(zoo.root, "hyper", "train", "--epochs", "4", "--lr", "5e-3", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    assert record["spec"]["tasks"] == ["lr-a", "lr-b", "tb", "text"] and record["loss_last"] < record["loss_first"]
    # the visual side: each task's image features (none for the text task) condition the image tower's tensors
    from pizoo.hypernet import is_visual, load_hyper

    net, _, sketches = load_hyper(zoo)
    assert record["spec"]["visual_dim"] > 0 and net.task_visuals.shape == (4, record["spec"]["visual_dim"])
    assert all(float(v.abs().sum()) > 0 for v in net.task_visuals[:3]) and float(net.task_visuals[3].abs().sum()) == 0
    with torch.no_grad():
        z = net.z(sketches[0], 0)
        a, b = net.generate(z, net.task_visuals[0]), net.generate(z, net.task_visuals[2] * -1)
    changed = {n for n in a if not torch.equal(a[n], b[n])}
    assert changed and all(is_visual(n) for n in changed)
    assert any(is_visual(n) for n in a) and any(not is_visual(n) and n not in changed for n in a)
    r = cli(zoo.root, "hyper", "show", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["visual side"].startswith("image features of size")
    new = helpers.image_task(tmp, "lr", 40, 77, name="lr-new")
    r = cli(zoo.root, "hyper", "generate", "lr-gen", "--data", new, "--image", "image", "--shots", "8",
            "--tune", "none", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)["metrics"]
    assert m["steps"] == 0 and 0 <= m["accuracy"] <= 1
    assert cli(zoo.root, "verify").exit_code == 0
    zoo.remove_task("lr-gen")


def test_zero_shot_similar_and_transfer_for_new_image_data(mixed_zoo, image_files):
    """Image data with no expert yet: rank the zoo against it (probe embedding), hand it the
    nearest task's expert; `list` says what each task reads."""
    tmp, _ = image_files
    new = helpers.image_task(tmp, "lr", 40, 55, name="lr-unseen")
    r = cli(mixed_zoo.root, "similar", "--data", new, "--image", "image", "--k", "2", "--json")
    assert r.exit_code == 0, r.output
    ranked = [json.loads(line)["task"] for line in r.stdout.splitlines() if line.strip()]
    assert len(ranked) == 2 and "text" not in ranked, ranked
    r = cli(mixed_zoo.root, "list", "--json")
    inputs = {d["task"]: d["input"] for d in map(json.loads, r.stdout.splitlines())}
    assert inputs == {"lr-a": "image", "lr-b": "image", "tb": "image", "text": "text"}


# -- image-text tasks -------------------------------------------------------------------------------
def test_image_text_task_scores_each_label_after_its_caption_against_the_image(duals, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "zoo", duals["dual"], "lora", "match")
    train, held = helpers.caption_task(tmp_path, 160, 0), helpers.caption_task(tmp_path, 60, 1, name="fit-eval")
    cols = Columns(text="caption", image="image")
    m = helpers.train(zoo, "fit", train, held, epochs=15, lr=5e-3, columns=cols)
    assert m.metrics["loss_last"] < 0.8 * m.metrics["loss_first"], m.metrics
    assert m.metrics["accuracy"] >= 0.7, m.metrics  # the caption alone or the image alone says nothing: 0.5
    assert json.loads((zoo.task_dir("fit") / "task.json").read_text())["source"]["columns"]["image"] == "image"
    em, _ = load_task_model(zoo, "fit")
    from pizoo.tasks import task_data

    td = task_data(zoo, "fit")
    assert td.eval.input_type == "image-text"
    rows = em.encode(td.eval.subset(list(range(10))), td.label_ids(td.eval)[:10])
    fast, slow = fisher_diag(em, rows, batch_size=4), fisher_diag(em, rows, method="loop")
    for n in slow:
        assert float((fast[n] - slow[n]).norm() / slow[n].norm().clamp(min=1e-30)) <= 1e-5, n
    r = cli(zoo.root, "list", "--json")
    assert json.loads(r.stdout.splitlines()[0])["input"] == "image-text"


def test_image_text_needs_the_match_head(vit_dir, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "zoo", vit_dir, "lora", "classification")
    f = helpers.caption_task(tmp_path, 20, 0)
    before = helpers.tree(zoo.root)
    r = cli(zoo.root, "add-task", "fit", "--data", f, "--image", "image", "--text", "caption", "--epochs", "1")
    assert r.exit_code != 0 and "cannot read an image and a text together" in r.stderr, r.stderr
    assert helpers.tree(zoo.root) == before


def test_verify_decodes_the_kept_images(duals, image_files, tmp_path):
    """A split rewritten with its hash but holding a broken image is reported, not trusted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pizoo.zoo import sha256_file

    tmp, files = image_files
    zoo = helpers.new_zoo(tmp_path / "zoo", duals["dual"], "lora", "match")
    _train_image(zoo, "lr-a", files, epochs=1)
    assert cli(zoo.root, "verify").exit_code == 0
    path = zoo.task_dir("lr-a") / "data" / "eval.parquet"
    table = pq.read_table(path)
    images = table.column("image").to_pylist()
    images[0] = b"\x89PNG\r\n\x1a\n broken"
    pq.write_table(table.set_column(table.column_names.index("image"), "image", pa.array(images)), path)
    manifest = json.loads((zoo.task_dir("lr-a") / "task.json").read_text())
    manifest["files"]["data/eval.parquet"] = sha256_file(path)
    (zoo.task_dir("lr-a") / "task.json").write_text(json.dumps(manifest))
    r = cli(zoo.root, "verify", "--json")
    assert r.exit_code == 1
    found = {(p["task"], p["file"], p["issue"]) for p in json.loads(r.stdout)["problems"]}
    assert ("lr-a", "data/eval.parquet", "an image does not decode") in found, found
