"""The zoo-wide index: kept by every write, rebuilt by verify, and ranking that needs no torch."""

import json
import subprocess
import sys

import helpers
import pytest
from typer.testing import CliRunner

from pizoo.cli import app
from pizoo.embed import embedded_tasks, load_embedding, similar
from pizoo.index import INDEX, Index
from pizoo.similarity import rank
from pizoo.zoo import FISHER, Zoo

runner = CliRunner()


def cli(root, *args):
    return runner.invoke(app, ["--zoo", str(root), *map(str, args)])


@pytest.fixture(scope="module")
def five(tmp_path_factory, bert_dir):
    tmp = tmp_path_factory.mktemp("five")
    zoo = helpers.new_zoo(tmp / "zoo", bert_dir, head=None)
    for i, rule in enumerate("aabba"):
        f, e = helpers.task_files(tmp, rule, "classification", n=40, seed=i, n_eval=20)
        helpers.train(zoo, f"t{i}", f, e, epochs=1, seed=i)
    return zoo


def _indexed(zoo):
    idx = Index.read(zoo.root / INDEX)
    return dict(zip(idx.names, idx.sha))


def test_every_write_keeps_the_index(five, tmp_path):
    import shutil

    shutil.copytree(five.root, tmp_path / "z")
    zoo = Zoo(tmp_path / "z")
    assert _indexed(zoo) == {n: zoo.manifest(n).files[FISHER] for n in zoo.task_names()}
    assert cli(zoo.root, "embed", "t1", "--samples", "8").exit_code == 0
    assert _indexed(zoo)["t1"] == zoo.manifest("t1").files[FISHER]
    assert cli(zoo.root, "rm", "t2", "--yes").exit_code == 0
    assert set(_indexed(zoo)) == {"t0", "t1", "t3", "t4"}
    assert json.loads(cli(zoo.root, "verify", "--json").stdout)["ok"]


def test_verify_reports_a_stale_index_and_rebuilds_it(five, tmp_path):
    import shutil

    shutil.copytree(five.root, tmp_path / "z")
    root = tmp_path / "z"
    for damage in (lambda: (root / INDEX).unlink(), lambda: (root / INDEX).write_bytes(b"not hdf5")):
        damage()
        r = cli(root, "verify", "--json")
        assert r.exit_code == 1
        assert json.loads(r.stdout)["problems"] == [{"task": "", "file": INDEX, "issue": "stale (rebuilt)"}]
        assert json.loads(cli(root, "verify", "--json").stdout)["ok"]  # rebuilt
        assert _indexed(Zoo(root)) == {n: Zoo(root).manifest(n).files[FISHER] for n in Zoo(root).task_names()}


@pytest.mark.parametrize("metric", ["cosine", "normalized"])
def test_ranking_on_the_index_equals_the_exact_ranking(five, metric):
    for name in five.task_names():
        exact = rank(load_embedding(five, name), embedded_tasks(five, exclude=(name,)), metric)
        got = similar(five, name, k=3, metric=metric)
        assert [(r["task"], r["similarity"]) for r in got] == exact[:3]


def test_ranking_listing_and_showing_import_no_torch(five):
    """`similar`, `list`, `show` and `graph` need numpy and h5py only."""
    for args in (["similar", "t0", "--k", "2", "--json"], ["list", "--json"], ["show", "t0", "--json"],
                 ["graph", "--tasks", "t0,t1,t3", "--out", str(five.root.parent / "g.png")]):
        code = ("import sys\nfrom pizoo.cli import main\n"
                f"sys.argv = ['pizoo', '--zoo', {str(five.root)!r}, *{args!r}]\n"
                "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
                "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip().splitlines()[-1] == "[]", (args, r.stdout)


def test_graph_of_a_neighbourhood_or_a_list(five, tmp_path):
    r = cli(five.root, "graph", "--around", "t0", "--k", "2", "--out", tmp_path / "a.png", "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    near = [x["task"] for x in similar(five, "t0", k=2)]
    assert sorted(rec["tasks"]) == sorted(["t0", *near]) and rec["exact"] and (tmp_path / "a.png").is_file()
    r = cli(five.root, "graph", "--tasks", "t1,t4", "--out", tmp_path / "b.png", "--json")
    assert json.loads(r.stdout)["tasks"] == ["t1", "t4"]


def test_a_task_the_index_does_not_know_is_still_ranked(five, tmp_path):
    """A folder copied in by hand (or a write killed before the index update): `similar` notices
    the index no longer covers the zoo and compares every task exactly."""
    import shutil

    shutil.copytree(five.root, tmp_path / "z")
    root = tmp_path / "z"
    shutil.copytree(root / "t3", root / "t9")
    manifest = json.loads((root / "t9" / "task.json").read_text())
    (root / "t9" / "task.json").write_text(json.dumps({**manifest, "name": "t9"}))
    r = cli(root, "similar", "t3", "--k", "1", "--json")
    assert r.exit_code == 0 and "stale" in r.stderr
    assert json.loads(r.stdout)["task"] == "t9" and json.loads(r.stdout)["similarity"] == pytest.approx(1.0)


def test_graph_of_a_zoo_too_large_for_a_matrix_draws_clusters(five, tmp_path, monkeypatch):
    """Past MATRIX_LIMIT tasks the rows are clusters of tasks (sketch k-means); every task is in one."""
    import pizoo.embed

    monkeypatch.setattr(pizoo.embed, "EXACT_MATRIX_LIMIT", 2)
    monkeypatch.setattr(pizoo.embed, "MATRIX_LIMIT", 3)
    r = cli(five.root, "graph", "--out", tmp_path / "c.png", "--csv", tmp_path / "c.csv", "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert not rec["exact"] and sorted(t for ts in rec["clusters"].values() for t in ts) == five.task_names()
    assert rec["tasks"] == sorted(rec["clusters"]) and (tmp_path / "c.png").stat().st_size > 1000
    assert len((tmp_path / "c.csv").read_text().splitlines()) == len(rec["clusters"]) + 1
