"""Task embeddings: exact per-example Fisher, the stored file, similarity metrics and ranking."""

import json
import random

import h5py
import helpers
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pizoo.cli import app
from pizoo.errors import IncompatibleExperts, UsageError
from pizoo.experts import KINDS
from pizoo.fisher import fisher_diag, read_h5, write_h5
from pizoo.heads import HEADS
from pizoo.models import ExpertModel
from pizoo.similarity import cosine, normalized, rank
from pizoo.zoo import FISHER

runner = CliRunner()


def cli(root, *args):
    return runner.invoke(app, ["--zoo", str(root), *map(str, args)])


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("head", sorted(HEADS))
def test_fast_path_equals_batch1_loop_on_padded_batches(kind, head, bases, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "z", bases[head], kind, head)
    em = ExpertModel(zoo.spec, helpers.labels_for(head), head_seed=0)
    probe = em.kind.probe({n: p.shape for n, p in em.expert.items()}, seed=0)
    with torch.no_grad():
        for n, t in probe.items():
            em.expert[n].copy_(t)
    rng = random.Random(0)
    rows = helpers.make_rows("a", 24, 0, labels=helpers.labels_for(head))
    texts = [" ".join(r["text"].split()[: rng.randint(1, 8)]) for r in rows]  # uneven lengths: padding
    enc = em.encode(helpers.ex(texts), [helpers.labels_for(head).index(r["label"]) for r in rows])
    fast = fisher_diag(em, enc, batch_size=8)
    slow = fisher_diag(em, enc, method="loop")
    assert set(fast) == set(slow) == set(em.expert)
    for n in slow:
        assert slow[n].abs().sum() > 0, f"{n}: the probe must make every tensor's Fisher non-zero"
        rel = float((fast[n] - slow[n]).norm() / slow[n].norm())
        assert rel <= 1e-5, (n, rel)


def test_fresh_lora_has_zero_fisher_for_A_but_the_probe_does_not(bert_dir, tmp_path):
    """Trap (a): B = 0 at a fresh LoRA, so ∂/∂A is exactly zero; the probe is non-degenerate."""
    zoo = helpers.new_zoo(tmp_path / "z", bert_dir)
    em = ExpertModel(zoo.spec, ("neg", "pos"), head_seed=0)
    rows = em.encode(helpers.ex(["w1 w2 w3", "w4 w5"]), [0, 1])
    f = fisher_diag(em, rows)
    assert all(float(v.abs().sum()) == 0 for n, v in f.items() if "lora_A" in n)
    from pizoo.fisher import probe_fisher

    p = probe_fisher(em, rows)
    assert all(float(v.abs().sum()) > 0 for v in p.values())
    # the probe leaves the model as it found it
    assert all(float(v.abs().sum()) == 0 for n, v in fisher_diag(em, rows).items() if "lora_A" in n)


def test_h5_round_trip(tmp_path):
    tensors = {"x.lora_A.weight": torch.rand(3, 4), "y.bias": torch.rand(5)}
    attrs = {"n_samples": 7, "method": "m", "kind": "lora"}
    write_h5(tmp_path / "f.h5", {"expert": tensors, "probe": tensors}, attrs)
    back, got = read_h5(tmp_path / "f.h5", "probe")
    assert set(back) == set(tensors)
    for n in tensors:
        assert back[n].dtype == np.float32 and np.array_equal(back[n], tensors[n].numpy())
    assert got["n_samples"] == 7 and got["kind"] == "lora"


def test_metrics_on_hand_made_vectors():
    a = {"t": np.array([1.0, 0.0, 0.0]), "u": np.array([2.0, 2.0])}
    b = {"t": np.array([0.0, 1.0, 0.0]), "u": np.array([2.0, 2.0])}
    # cosine of (1,0,0,2,2) and (0,1,0,2,2): 8 / 9
    assert cosine(a, b) == pytest.approx(8 / 9)
    assert cosine(a, a) == pytest.approx(1.0)
    # normalized, tensor t: x=(1,0,0)/(1+eps..), y=(0,1,0): orthogonal -> 0; tensor u: equal -> 1; mean 0.5
    assert normalized(a, b) == pytest.approx(0.5, abs=1e-6)
    # normalized is blind to a tensor's overall scale, cosine is not
    c = {"t": a["t"] * 100, "u": a["u"] * 3}
    assert normalized(a, c) == pytest.approx(1.0) and cosine(a, c) < 0.999
    half = {"t": np.array([1.0, 1.0, 0.0]), "u": np.array([1.0, 3.0])}
    # per tensor t: x=(.5,.5,0)... a/(a+half): (1/2, 0, 0) vs (1/2, 1, 0) -> cos = .25/(.5*sqrt(1.25))
    x_t, y_t = np.array([0.5, 0, 0]), np.array([0.5, 1, 0])
    x_u, y_u = np.array([2 / 3, 2 / 5]), np.array([1 / 3, 3 / 5])
    cos = lambda p, q: p @ q / np.linalg.norm(p) / np.linalg.norm(q)  # noqa: E731
    assert normalized(a, half) == pytest.approx((cos(x_t, y_t) + cos(x_u, y_u)) / 2, abs=1e-6)
    assert [t for t, _ in rank(a, {"b": b, "a2": a, "h": half})][0] == "a2"


@pytest.fixture(scope="module")
def ranked_zoo(tmp_path_factory, bert_dir):
    """a1, a2: the same rows, two seeds. b: another labelling rule. twin: a1 again, same seed."""
    tmp = tmp_path_factory.mktemp("rank")
    zoo = helpers.new_zoo(tmp / "zoo", bert_dir)
    fa, ea = helpers.task_files(tmp, "a", "classification", n=300, seed=0)
    fb, eb = helpers.task_files(tmp, "b", "classification", n=300, seed=1)
    helpers.train(zoo, "a1", fa, ea, seed=1)
    helpers.train(zoo, "a2", fa, ea, seed=2)
    helpers.train(zoo, "b", fb, eb, seed=1)
    return zoo, (fa, ea)


@pytest.mark.parametrize("metric", ["cosine", "normalized"])
def test_same_data_other_seed_ranks_first_under_both_metrics(ranked_zoo, metric):
    zoo, _ = ranked_zoo
    root = zoo.root
    for which in ("expert", "probe"):
        for me, twin in (("a1", "a2"), ("a2", "a1")):
            r = cli(root, "similar", me, "--metric", metric, "--which", which, "--json")
            assert r.exit_code == 0, r.output
            rows = [json.loads(line) for line in r.stdout.splitlines()]
            assert rows[0]["task"] == twin, (which, metric, rows)
            assert rows[0]["similarity"] > rows[1]["similarity"]
            assert [row["rank"] for row in rows] == [1, 2]


def test_identical_task_ranks_first_with_similarity_one(ranked_zoo, tmp_path):
    zoo, (fa, ea) = ranked_zoo
    helpers.train(zoo, "twin", fa, ea, seed=1)
    try:
        r = cli(zoo.root, "similar", "a1", "--k", "1", "--json")
        assert r.exit_code == 0, r.output
        row = json.loads(r.stdout)
        assert row["task"] == "twin" and row["similarity"] == pytest.approx(1.0, abs=1e-9)
        r = cli(zoo.root, "similar", "a1", "--k", "1", "--metric", "normalized", "--json")
        assert json.loads(r.stdout)["similarity"] == pytest.approx(1.0, abs=1e-6)
    finally:
        zoo.remove_task("twin")


def test_zero_shot_similar_from_data_and_graph(ranked_zoo, tmp_path):
    zoo, (fa, _) = ranked_zoo
    r = cli(zoo.root, "similar", "--data", fa, "--k", "2", "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["rank"] for row in rows] == [1, 2]
    assert {row["task"] for row in rows} == {"a1", "a2"}  # the rule-b task ranks last
    png, csv = tmp_path / "g.png", tmp_path / "g.csv"
    r = cli(zoo.root, "graph", "--out", png, "--csv", csv, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = csv.read_text().splitlines()
    assert lines[0] == "task,a1,a2,b" and len(lines) == 4
    m = np.array(d["matrix"])
    assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1.0)
    assert set(d["order"]) == {"a1", "a2", "b"}


def test_add_task_writes_both_embedding_groups_with_attributes(ranked_zoo):
    zoo, _ = ranked_zoo
    with h5py.File(zoo.task_dir("a1") / FISHER) as f:
        assert set(f) == {"expert", "probe"}
        assert f.attrs["base_fingerprint"] == zoo.spec.fingerprint and f.attrs["kind"] == "lora"
        assert f.attrs["n_samples"] > 0 and "per-example" in f.attrs["method"]
        assert set(f["expert"]) == set(f["probe"])
        assert all(f["expert"][n].dtype == np.float32 for n in f["expert"])


# -- bad input -----------------------------------------------------------------------------------
@pytest.fixture
def two_tasks(bert_dir, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "zoo", bert_dir)
    f, e = helpers.task_files(tmp_path, "a", "classification", n=40, n_eval=20)
    helpers.train(zoo, "x", f, e, epochs=1)
    helpers.train(zoo, "y", f, e, epochs=1, seed=1)
    return zoo


def _replace_fisher(zoo, name, fn):
    """Rewrite a task's fisher.h5 through the zoo (hashes stay consistent)."""
    from pizoo.fisher import read_h5 as rd

    vec, attrs = rd(zoo.task_dir(name) / FISHER, "expert")
    probe, _ = rd(zoo.task_dir(name) / FISHER, "probe")
    groups = {"expert": {k: torch.from_numpy(fn(v)) for k, v in vec.items()},
              "probe": {k: torch.from_numpy(fn(v)) for k, v in probe.items()}}  # both: similar ranks by probe
    zoo.update_task(name, {FISHER: lambda p: write_h5(p, groups, attrs)}, lambda m: m)


def test_missing_and_corrupt_fisher(two_tasks):
    zoo = two_tasks
    (zoo.task_dir("x") / FISHER).write_bytes(b"garbage")
    r = cli(zoo.root, "similar", "y")  # x is skipped with a note; nothing else to compare
    assert r.exit_code == 1 and "skipped" in r.stderr and "pizoo embed" in r.stderr
    r = cli(zoo.root, "similar", "x")
    assert r.exit_code == 1 and "does not match the sha256" in r.stderr
    v = cli(zoo.root, "verify", "--json")
    assert v.exit_code == 1 and {"task": "x", "file": FISHER, "issue": "corrupt"} in json.loads(v.stdout)["problems"]
    # recomputing repairs it
    assert cli(zoo.root, "embed", "x").exit_code == 0
    assert cli(zoo.root, "verify").exit_code == 0
    # a task without a fisher.h5 at all (e.g. imported): say how to compute it
    zoo.update_task("x", {}, lambda m: m.replace(files={k: h for k, h in m.files.items() if k != FISHER}))
    (zoo.task_dir("x") / FISHER).unlink(missing_ok=True)
    r = cli(zoo.root, "similar", "x")
    assert r.exit_code == 1 and "has no Fisher embedding" in r.stderr and "pizoo embed x" in r.stderr


def test_all_zero_and_nan_fisher_are_clear_errors(two_tasks):
    zoo = two_tasks
    _replace_fisher(zoo, "x", lambda v: np.zeros_like(v))
    r = cli(zoo.root, "similar", "x")
    assert r.exit_code == 1 and "all zero" in r.stderr
    _replace_fisher(zoo, "x", lambda v: np.full_like(v, np.nan))
    r = cli(zoo.root, "similar", "x")
    assert r.exit_code == 1 and "NaN" in r.stderr


def test_k_out_of_range_and_a_zoo_of_one(two_tasks):
    zoo = two_tasks
    r = cli(zoo.root, "similar", "x", "--k", "5")
    assert r.exit_code == 2 and "--k 5 is more than the 1 other" in r.stderr
    r = cli(zoo.root, "similar", "x", "--k", "0")
    assert r.exit_code == 2 and "--k must be at least 1" in r.stderr
    zoo.remove_task("y")
    r = cli(zoo.root, "similar", "x")
    assert r.exit_code == 1 and "no other embedded task" in r.stderr
    r = cli(zoo.root, "graph", "--out", zoo.root.parent / "g.png")
    assert r.exit_code == 1 and "needs two or more" in r.stderr


def test_embeddings_of_another_space_are_never_compared(two_tasks):
    zoo = two_tasks
    from pizoo.embed import load_embedding
    from pizoo.fisher import read_h5 as rd

    vec, attrs = rd(zoo.task_dir("x") / FISHER, "expert")
    groups = {g: {k: torch.from_numpy(v) for k, v in vec.items()} for g in ("expert", "probe")}
    attrs = {**attrs, "base_fingerprint": "sha256:another-model"}
    zoo.update_task("x", {FISHER: lambda p: write_h5(p, groups, attrs)}, lambda m: m)
    with pytest.raises(IncompatibleExperts, match="sha256:another-model"):
        load_embedding(zoo, "x")
    r = cli(zoo.root, "similar", "x")
    assert r.exit_code == 1 and "base_fingerprint" in r.stderr and "pizoo embed --all" in r.stderr


def test_embed_all_and_samples(two_tasks):
    zoo = two_tasks
    r = cli(zoo.root, "embed", "--all", "--samples", "5", "--json")
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["task"] for line in r.stdout.splitlines()] == ["x", "y"]
    with h5py.File(zoo.task_dir("x") / FISHER) as f:
        assert f.attrs["n_samples"] == 5
    with pytest.raises(UsageError):
        from pizoo.fisher import choose

        choose([{}], 0, 0)
    assert zoo.verify() == []
