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
        assert [(r.task, r.similarity) for r in got] == exact[:3]


def test_ranking_listing_and_showing_import_no_torch(five):
    """`similar --by fisher --which W`, `list`, `show` and `graph` need numpy and h5py only (the fit
    stage of `similar` loads the model, and the default embedding depends on the head: pizoo.predict)."""
    for args in (["similar", "t0", "--k", "2", "--by", "fisher", "--which", "probe", "--json"],
                 ["similar", "t0", "--k", "2", "--by", "fisher", "--which", "expert", "--metric", "centred", "--json"], ["list", "--json"], ["show", "t0", "--json"],
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
    near = [x.task for x in similar(five, "t0", k=2)]
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
    import pizoo.graph

    monkeypatch.setattr(pizoo.graph, "EXACT_MATRIX_LIMIT", 2)
    monkeypatch.setattr(pizoo.graph, "MATRIX_LIMIT", 3)
    r = cli(five.root, "graph", "--out", tmp_path / "c.png", "--csv", tmp_path / "c.csv", "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert not rec["exact"] and sorted(t for ts in rec["clusters"].values() for t in ts) == five.task_names()
    assert rec["tasks"] == sorted(rec["clusters"]) and (tmp_path / "c.png").stat().st_size > 1000
    assert len((tmp_path / "c.csv").read_text().splitlines()) == len(rec["clusters"]) + 1


# -- issue 25: the zoo mean and the centred metric ----------------------------------------------------
def test_centring_stops_a_planted_hub_being_everyones_nearest():
    """Fisher vectors share a large common part; a task made of little else (the hub) is everyone's
    nearest by plain cosine. With the zoo mean taken away each task finds its true partner."""
    import numpy as np

    from pizoo.index import sketch

    rng = np.random.default_rng(0)
    d = 3000
    common = rng.uniform(0, 1, d) * 4
    vecs = {}
    for pair in "abcd":
        shared = rng.uniform(0, 1, d) * (rng.uniform(0, 1, d) < 0.1) * 6
        for j in (1, 2):
            vecs[f"{pair}{j}"] = {"w": common + shared + rng.uniform(0, 1, d) ** 4 * 6}
    vecs["hub"] = {"w": common + rng.uniform(0, 1, d) * 0.2}
    idx = Index.empty()
    for name, vec in vecs.items():
        idx = idx.with_task(name, "sha", {"expert": sketch(vec)})
    tasks = [n for n in vecs if n != "hub"]
    top1 = {m: {n: idx.candidates(n, "expert", m, 1)[0][0] for n in tasks} for m in ("cosine", "centred")}
    assert set(top1["cosine"].values()) == {"hub"}  # the planted hub: everyone's nearest
    assert top1["centred"] == {n: n[0] + ("2" if n[1] == "1" else "1") for n in tasks}  # each its partner


def _stored_mean(root):
    import h5py
    import numpy as np

    with h5py.File(root / INDEX, "r") as f:
        return np.asarray(f["mean/expert/cosine"][()])


def _mean_of_files(zoo):
    import numpy as np

    from pizoo.index import sketches_of

    return np.mean([sketches_of(zoo.task_dir(n) / FISHER)["expert"]["cosine"] for n in zoo.task_names()], axis=0)


def test_the_index_keeps_the_zoo_mean_through_add_rm_and_a_crash(five, tmp_path):
    import shutil

    import numpy as np

    shutil.copytree(five.root, tmp_path / "z")
    zoo = Zoo(tmp_path / "z")
    assert np.allclose(_stored_mean(zoo.root), _mean_of_files(zoo), atol=1e-6)
    before = _stored_mean(zoo.root)
    assert cli(zoo.root, "rm", "t2", "--yes").exit_code == 0
    after = _stored_mean(zoo.root)
    assert np.allclose(after, _mean_of_files(zoo), atol=1e-6) and not np.allclose(after, before, atol=1e-6)
    assert cli(zoo.root, "embed", "t1", "--samples", "8").exit_code == 0
    assert np.allclose(_stored_mean(zoo.root), _mean_of_files(zoo), atol=1e-6)
    # a crash between the task's rename and the index update: a task folder the index does not hold
    shutil.copytree(five.root / "t2", zoo.root / "t2")
    assert not zoo.index_is_current()
    ranked = {r.task: r.similarity
              for r in similar(zoo, "t0", metric="centred")}
    assert "t2" in ranked  # ranked against a mean that includes it (the index rebuilt in memory)
    assert cli(zoo.root, "verify").exit_code == 1  # stale: rebuilt
    assert np.allclose(_stored_mean(zoo.root), _mean_of_files(zoo), atol=1e-6)
    rebuilt = {r.task: r.similarity for r in similar(zoo, "t0", metric="centred")}
    assert rebuilt == pytest.approx(ranked, abs=1e-6)
