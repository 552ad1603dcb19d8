"""The main job, CI-sized: the whole workflow through the CLI on a tiny model and synthetic files."""

import json

import helpers
import torch
from typer.testing import CliRunner

from pizoo.cli import app

runner = CliRunner()


def run(root, *args):
    r = runner.invoke(app, ["--zoo", str(root), *map(str, args)])
    assert r.exit_code == 0, f"pizoo {' '.join(map(str, args))}\n{r.output}"
    return r


def test_init_add_similar_graph_interpolate_export_load(bert_dir, tmp_path):
    root = tmp_path / "zoo"
    spec = json.loads(run(root, "init", "--base-model", bert_dir, "--json").stdout)
    assert spec["kind"] == "lora" and spec["options"]["r"] == 8 and (root / "zoo.toml").is_file()

    files = {"alpha": helpers.task_files(tmp_path, "a", "classification", n=200, seed=0),
             "beta": helpers.task_files(tmp_path, "a", "classification", n=200, seed=3),
             "gamma": helpers.task_files(tmp_path, "b", "classification", n=200, seed=5)}
    for name, (train, held) in files.items():
        shots = ["--shots", "16"] if name == "alpha" else []
        out = json.loads(run(root, "add-task", name, "--data", train, "--eval-data", held, "--epochs", "10",
                             *shots, "--json").stdout)
        assert out["task"] == name and set(out["files"]) == {"expert.safetensors", "fisher.h5",
                                                               "data/train.parquet", "data/eval.parquet"}
        assert 0 <= out["metrics"]["accuracy"] <= 1 and out["labels"] == ["neg", "pos"]
        assert 0 <= out["metrics"]["accuracy_zero_shot"] <= 1  # the base model alone, beside the expert
        for f in ("expert.safetensors", "fisher.h5", "task.json", "data/train.parquet"):
            assert (root / name / f).is_file()
    assert json.loads(run(root, "show", "alpha", "--json").stdout)["metrics"]["n_train"] == 32

    ranked = [json.loads(line) for line in run(root, "similar", "alpha", "--k", "2", "--json").stdout.splitlines()]
    assert [r["rank"] for r in ranked] == [1, 2] and {r["task"] for r in ranked} == {"beta", "gamma"}
    assert ranked[0]["similarity"] >= ranked[1]["similarity"]

    graph = json.loads(run(root, "graph", "--out", tmp_path / "g.png", "--csv", tmp_path / "g.csv",
                           "--json").stdout)
    assert graph["tasks"] == ["alpha", "beta", "gamma"] and (tmp_path / "g.png").stat().st_size > 1000
    assert len((tmp_path / "g.csv").read_text().splitlines()) == 4

    pi = json.loads(run(root, "interpolate", "--target", "alpha", "--k", "2", "--epochs", "5", "--device", "cpu",
                        "--json").stdout)
    assert pi["task"] == "alpha-pi" and len(pi["sources"]) == 2 and len(pi["alpha"]["expert"]) == 3
    assert {"accuracy", "accuracy_target", "accuracy_uniform_mixture"} <= set(pi["metrics"])
    assert set(json.loads(run(root, "show", "alpha-pi", "--json").stdout)["files"]) == {
        "expert.safetensors", "fisher.h5", "data/train.parquet", "data/eval.parquet"}

    out = tmp_path / "export"
    exported = json.loads(run(root, "export", "alpha-pi", "--out", out, "--json").stdout)
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "pizoo_provenance.json"} <= set(
        exported["files"])
    card = (out / "README.md").read_text()
    assert all(s["task"] in card for s in pi["sources"])

    # load the export with plain peft, as a user without pizoo would: the label whose text embeds
    # closest to the input's (mean pooling, cosine) is pizoo's prediction
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    labels = json.loads((out / "pizoo_provenance.json").read_text())["labels"]
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(bert_dir), out).eval()
    tok = AutoTokenizer.from_pretrained(bert_dir)

    def embed(batch):
        enc = tok(batch, return_tensors="pt", padding=True)
        mask = enc["attention_mask"][..., None].float()
        return torch.nn.functional.normalize((model(**enc).last_hidden_state * mask).sum(1) / mask.sum(1), dim=-1)

    texts = [r["text"] for r in helpers.make_rows("a", 40, 99)]
    with torch.no_grad():
        preds = (embed(texts) @ embed(labels).T).argmax(-1).tolist()
    from pizoo.tasks import load_task_model
    from pizoo.zoo import Zoo

    em, _ = load_task_model(Zoo(root), "alpha-pi")
    ours = em.predict(em.encode(helpers.ex(texts), [0] * len(texts))).tolist()
    assert preds == ours
    assert run(root, "verify", "--json").stdout and json.loads(run(root, "verify", "--json").stdout)["ok"]


def test_shared_label_space_cross_task_eval_and_a_copied_zoo(bert_dir, tmp_path):
    """Any expert scores any task's data (labels come from the data); a copied zoo works with the
    original data files gone."""
    import shutil

    root = tmp_path / "zoo"
    run(root, "init", "--base-model", bert_dir, "--rank", "4")
    a_train, a_eval = helpers.task_files(tmp_path, "a", "classification", n=120, seed=0, n_eval=24)
    rows = helpers.make_rows("b", 120, 5, labels=("red", "blue"))
    b_train = helpers.write_rows(rows[:90], tmp_path / "b.csv")
    b_eval = helpers.write_rows(rows[90:], tmp_path / "b-eval.csv")
    run(root, "add-task", "a", "--data", a_train, "--eval-data", a_eval, "--epochs", "4")
    run(root, "add-task", "b", "--data", b_train, "--eval-data", b_eval, "--epochs", "4",
        "--label-template", "the colour {label}")
    assert json.loads(run(root, "show", "b", "--json").stdout)["labels"] == ["the colour blue", "the colour red"]

    # a's expert (labels neg/pos) scores b's data, with b's labels: from the kept split, or from the file
    on = json.loads(run(root, "eval", "a", "--on", "b", "--json").stdout)
    assert on["labels"] == ["the colour blue", "the colour red"] and on["n"] == 30
    raw = json.loads(run(root, "eval", "a", "--data", b_eval, "--json").stdout)
    assert raw["labels"] == ["blue", "red"] and raw["n"] == 30  # a's own labels do not cover b's: the data's own
    own = json.loads(run(root, "eval", "b", "--data", b_eval, "--json").stdout)
    assert own["labels"] == ["the colour blue", "the colour red"]  # b's template applies to b's data
    assert own["accuracy"] == json.loads(run(root, "eval", "b", "--json").stdout)["accuracy"]

    # zero-shot transfer: data with no expert takes its nearest task's expert as is
    zs = json.loads(run(root, "interpolate", "--target", "c", "--data", b_eval, "--zero-shot", "--json").stdout)
    assert zs["sources"][0]["task"] in ("a", "b") and 0 <= zs["accuracy"] <= 1

    copy = tmp_path / "copied"
    shutil.copytree(root, copy)
    for f in (a_train, a_eval, b_train, b_eval):
        f.unlink()
    assert json.loads(run(copy, "verify", "--json").stdout)["ok"]
    assert json.loads(run(copy, "eval", "b", "--json").stdout)["accuracy"] == own["accuracy"]
    run(copy, "embed", "a")
    pi = json.loads(run(copy, "interpolate", "--target", "a", "--with", "b", "--steps", "3", "--json").stdout)
    assert pi["task"] == "a-pi" and pi["metrics"]["n_eval"] == 24
