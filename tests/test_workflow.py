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
        assert out["task"] == name and set(out["files"]) == {"expert.safetensors", "fisher.h5"}
        assert 0 <= out["metrics"]["accuracy"] <= 1 and out["labels"] == ["neg", "pos"]
        for f in ("expert.safetensors", "fisher.h5", "task.json"):
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
        "expert.safetensors", "fisher.h5"}

    out = tmp_path / "export"
    exported = json.loads(run(root, "export", "alpha-pi", "--out", out, "--json").stdout)
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "pizoo_provenance.json"} <= set(
        exported["files"])
    card = (out / "README.md").read_text()
    assert all(s["task"] in card for s in pi["sources"])

    # load the export with plain peft, as a user without pizoo would, and get pizoo's predictions
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    labels = json.loads((out / "pizoo_provenance.json").read_text())["labels"]
    model = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=len(labels)), out).eval()
    tok = AutoTokenizer.from_pretrained(bert_dir)
    texts = [r["text"] for r in helpers.make_rows("a", 40, 99)]
    with torch.no_grad():
        preds = model(**tok(texts, return_tensors="pt", padding=True)).logits.argmax(-1).tolist()
    from pizoo.tasks import load_task_model
    from pizoo.zoo import Zoo

    em, _ = load_task_model(Zoo(root), "alpha-pi")
    ours = em.predict(em.encode(texts, None, [0] * len(texts))).tolist()
    assert preds == ours
    assert run(root, "verify", "--json").stdout and json.loads(run(root, "verify", "--json").stdout)["ok"]
