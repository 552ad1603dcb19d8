"""HyperPELT: the hypernetwork generates experts of the zoo's kind, trains over the zoo's tasks,
reproduces its multi-task predictions after a reload, and writes generated tasks that every other
command accepts; bad input and Ctrl-C leave the zoo as it was."""

import json

import helpers
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from pizoo.cli import app
from pizoo.experts import KINDS
from pizoo.fisher import fisher_diag
from pizoo.hypernet import HYPER_DIR, WEIGHTS, HyperNet, HyperSpec, block_of, load_hyper
from pizoo.models import ExpertModel
from pizoo.tasks import load_task_model, task_data

runner = CliRunner()


def cli(root, *args):
    return runner.invoke(app, ["--zoo", str(root), *map(str, args)])


def test_block_of_names_the_layer():
    assert block_of("m.encoder.layer.3.attention.lora_A.weight") == ("m.encoder.layer.*.attention.lora_A.weight", 3)
    assert block_of("prompt_embeddings") == ("prompt_embeddings", 0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_generated_expert_has_the_kinds_shape_and_starts_at_the_initial_expert(kind, bert_dir, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "zoo", bert_dir, kind=kind, head="match")
    em = ExpertModel(zoo.spec, ("neg", "pos"))
    init = em.state()
    net = HyperNet(HyperSpec(("a", "b")), init, sketch_dim=16)
    z = net.z(torch.randn(16), 1)
    out = net.generate(z)
    assert list(out) == list(em.expert) and all(out[n].shape == em.expert[n].shape for n in out)
    assert all(torch.equal(out[n], init[n]) for n in out)  # an untrained hypernetwork: the zoo's starting expert
    with torch.no_grad():
        for g in net.generators:
            g.weight.normal_()
    out = net.generate(z)
    assert all(not torch.equal(out[n], init[n]) for n in out)
    em.load_state({n: t.detach() for n, t in out.items()}, where="generated")  # plain tensors of the kind
    assert net.trained_parameters() == sum(p.numel() for p in net.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def hzoo(tmp_path_factory, bert_dir):
    tmp = tmp_path_factory.mktemp("hyper")
    zoo = helpers.new_zoo(tmp / "zoo", bert_dir, head="match")
    for name, rule, seed in (("a1", "a", 1), ("a2", "a", 2), ("b1", "b", 3)):
        train = helpers.write_rows(helpers.make_rows(rule, 120, seed, labels=("neg", "pos")), tmp / f"{name}.csv")
        helpers.train(zoo, name, train, epochs=5, seed=seed)
    new = helpers.write_rows(helpers.make_rows("a", 120, 9, labels=("neg", "pos")), tmp / "new.csv")
    r = cli(zoo.root, "hyper", "train", "--all", "--epochs", "6", "--lr", "5e-3", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    return zoo, json.loads(r.stdout), new


def test_train_stores_a_hypernetwork_that_reproduces_its_multitask_predictions(hzoo):
    zoo, record, _ = hzoo
    assert record["spec"]["tasks"] == ["a1", "a2", "b1"] and record["steps"] > 0
    prov = record["provenance"]
    assert prov["base_fingerprint"] == zoo.spec.fingerprint and prov["how"] == "hyper-train"
    assert all(len(prov["train_split_sha256"][t]) == 64 for t in record["spec"]["tasks"])
    assert record["loss_last"] < record["loss_first"]
    net, rec, sketches = load_hyper(zoo)
    assert rec["sha256"][WEIGHTS] and sketches.shape == (3, rec["sketch_dim"])
    for i, t in enumerate(rec["spec"]["tasks"]):
        em, manifest = load_task_model(zoo, t)
        td = task_data(zoo, t, manifest)
        rows = em.encode(td.eval, td.label_ids(td.eval))
        with torch.no_grad():
            params = net.generate(net.z(sketches[i], i))
        assert em.accuracy(rows, params=params) == record["accuracy"][t], t
    r = cli(zoo.root, "hyper", "show", "--json")
    info = json.loads(r.stdout)
    assert r.exit_code == 0 and info["hypernetwork parameters"] == net.trained_parameters()
    assert info["one expert"] == sum(p.numel() for p in em.expert.values())
    assert cli(zoo.root, "verify").exit_code == 0


def test_generate_writes_a_task_every_command_accepts(hzoo, tmp_path):
    zoo, _, new = hzoo
    r = cli(zoo.root, "hyper", "generate", "gen", "--data", new, "--shots", "8", "--epochs", "3", "--device", "cpu",
            "--json")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    m, prov = shown["metrics"], shown["provenance"]
    assert prov["how"] == "hyper" and prov["hyper"]["tune"] == "task-embedding" and m["steps"] == 3
    assert 0 <= m["accuracy_generated"] <= 1 and len(prov["hyper"]["z"]) == 32
    saved = load_file(zoo.task_dir("gen") / "expert.safetensors")
    em, _ = load_task_model(zoo, "gen")
    assert set(saved) == set(em.expert)
    for args in (["eval", "gen", "--json"], ["embed", "gen"], ["similar", "gen", "--k", "2"],
                 ["interpolate", "--target", "gen", "--k", "1", "--steps", "2", "--device", "cpu"],
                 ["export", "gen", "--out", tmp_path / "gen-peft"]):
        r = cli(zoo.root, *args)
        assert r.exit_code == 0, (args, r.output)
    assert json.loads(cli(zoo.root, "eval", "gen", "--json").stdout)["accuracy"] == m["accuracy"]
    r = cli(zoo.root, "hyper", "generate", "gen-none", "--data", new, "--shots", "8", "--tune", "none",
            "--device", "cpu", "--json")
    m = json.loads(r.stdout)["metrics"]
    assert r.exit_code == 0 and m["steps"] == 0 and m["accuracy"] == m["accuracy_generated"]
    hyper_before = helpers.tree(zoo.root / HYPER_DIR)
    r = cli(zoo.root, "hyper", "generate", "gen-all", "--data", new, "--shots", "8", "--tune", "all", "--epochs", "2",
            "--device", "cpu", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["provenance"]["hyper"]["tune"] == "all", r.output
    assert helpers.tree(zoo.root / HYPER_DIR) == hyper_before  # tuning all of it tunes a copy, not the zoo's
    for t in ("gen", "gen-none", "gen-all", "gen-pi"):
        zoo.remove_task(t)


def test_fisher_oracle_on_a_generated_expert(hzoo):
    zoo, _, _ = hzoo
    net, _, sketches = load_hyper(zoo)
    em, _ = load_task_model(zoo, "a1")
    with torch.no_grad():
        em.load_state({n: t.detach() for n, t in net.generate(net.z(sketches[0], 0)).items()}, where="generated")
    em.wrapped.double()
    rows = em.encode(helpers.ex(["w1 w2 w3 w4 w5 w6 w7", "w9", "w20 w30 w31", "w40 w41 w42 w43 w44"]), [0, 1, 1, 0])
    fast = fisher_diag(em, rows, batch_size=3)
    slow = fisher_diag(em, rows, method="loop")
    # measured against the expert's largest block: a generated expert can saturate one block's
    # attention, leaving it a Fisher of ~1e-29 whose float32 norm underflows to 0 (0/0 = nan)
    scale = max(float(f.double().norm()) for f in slow.values())
    for n in slow:
        assert slow[n].abs().sum() > 0, n
        assert float((fast[n].double() - slow[n].double()).norm()) <= 1e-5 * scale, n


def test_bad_input_changes_nothing(hzoo, tmp_path, bert_dir):
    zoo, _, new = hzoo
    before = helpers.tree(zoo.root)
    for args, words in ((["generate", "x", "--data", new, "--tune", "some"], "--tune 'some'"),
                        (["generate", "a1", "--data", new], "already exists"),
                        (["generate", "x", "--data", tmp_path / "nope.csv"], "nope.csv"),
                        (["generate", "x", "--data", new, "--max-length", "2"], "--max-length must be at least 4"),
                        (["train", "--tasks", "a1"], "several tasks"),
                        (["train", "--tasks", "a1,a1"], "twice"),
                        (["train", "--tasks", "a1,zz"], "zz"),
                        (["train", "--all", "--tasks", "a1,a2"], "--all and --tasks"),
                        (["train", "--sites", "(unclosed"], "not a regular expression")):
        r = cli(zoo.root, "hyper", *args, "--device", "cpu")
        assert r.exit_code != 0 and words in r.output, (args, r.output)
    assert helpers.tree(zoo.root) == before
    (zoo.root / HYPER_DIR / WEIGHTS).write_bytes(b"garbage")  # a damaged hypernetwork: found and refused
    try:
        r = cli(zoo.root, "verify")
        assert r.exit_code == 1 and HYPER_DIR in r.output and "corrupt" in r.output
        r = cli(zoo.root, "hyper", "generate", "x", "--data", new, "--device", "cpu")
        assert r.exit_code == 1 and "sha256" in r.output and not (zoo.root / "x").exists()
    finally:
        (zoo.root / HYPER_DIR / WEIGHTS).write_bytes(before[f"{HYPER_DIR}/{WEIGHTS}"])
    classification = helpers.new_zoo(tmp_path / "cls", bert_dir)
    r = cli(classification.root, "hyper", "train")
    assert r.exit_code == 1 and "shared label space" in r.output
    r = cli(tmp_path / "no-zoo-here", "hyper", "show")
    assert r.exit_code == 1 and "is not a pizoo zoo" in r.output and not (tmp_path / "no-zoo-here").exists(), r.output
    r = cli(helpers.new_zoo(tmp_path / "match", bert_dir, head="match").root, "hyper", "show")
    assert r.exit_code == 1 and "has no hypernetwork" in r.output and "pizoo hyper train" in r.output, r.output


def test_ctrl_c_during_hyper_train_leaves_the_zoo_as_it_was(hzoo):
    zoo, _, _ = hzoo
    before = helpers.tree(zoo.root)
    code, err = helpers.ctrl_c_while_training(zoo.root, "hyper", "train", "--steps", "100000", "--device", "cpu")
    assert code == 130 and "interrupted" in err, err[-2000:]
    assert helpers.tree(zoo.root) == before


def test_sites_narrow_what_the_hypernetwork_generates(hzoo, tmp_path):
    """--sites picks insertion sites of the zoo's kind by regex; the other tensors stay the zoo's
    initial expert, the hypernetwork is smaller, and a pattern that picks nothing changes nothing."""
    import shutil

    zoo, full, _ = hzoo
    root = tmp_path / "copy"
    shutil.copytree(zoo.root, root)
    shutil.rmtree(root / HYPER_DIR)
    before = helpers.tree(root)
    r = cli(root, "hyper", "train", "--sites", "nothing-like-this", "--epochs", "1", "--device", "cpu")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.exit_code == 2 and "matches none of this zoo's expert sites" in lines[0], r.output
    assert helpers.tree(root) == before
    r = cli(root, "hyper", "train", "--sites", "query", "--epochs", "2", "--lr", "5e-3", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    assert record["spec"]["sites"] == ["query"]
    assert record["parameters"]["hypernetwork"] < full["parameters"]["hypernetwork"]
    from pizoo.zoo import Zoo

    copy = Zoo(root)
    net, _, sketches = load_hyper(copy)
    out = net.generate(net.z(sketches[0], 0))
    init = {n: getattr(net, f"init_{j}") for j, n in enumerate(net.names)}
    moved = {n for n in out if not torch.equal(out[n], init[n])}
    assert moved and all(".query." in n for n in moved), sorted(moved)[:4]
    r = cli(root, "hyper", "show", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["sites"] == "query"
    assert cli(root, "verify").exit_code == 0


def test_train_skips_a_task_whose_split_is_corrupt(hzoo, tmp_path):
    """Regression: one corrupt parquet aborted `hyper train`; now that task is named and left out."""
    import shutil

    shutil.copytree(hzoo[0].root, tmp_path / "z")
    root = tmp_path / "z"
    (root / "b1" / "data" / "train.parquet").write_bytes(b"not parquet")
    r = cli(root, "hyper", "train", "--all", "--steps", "2", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    assert "skipped tasks that could not be read: b1" in r.stderr
    assert json.loads(r.stdout)["spec"]["tasks"] == ["a1", "a2"]
    (root / "a2" / "data" / "train.parquet").write_bytes(b"not parquet either")
    r = cli(root, "hyper", "train", "--all", "--steps", "2", "--device", "cpu")
    assert r.exit_code == 2 and "1 of 3 could be read" in r.stderr
