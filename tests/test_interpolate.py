"""π-Tuning: the softmax(α) mixture, its training, the saved result, zero-shot transfer, curve."""

import json

import helpers
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from pizoo.cli import app
from pizoo.evaluate import evaluate_task
from pizoo.experts import KINDS, get_kind
from pizoo.interpolate import interpolate_task
from pizoo.mixture import MixSpec, Mixture
from pizoo.models import split_head
from pizoo.tasks import load_task_model
from pizoo.train import TrainConfig
from pizoo.zoo import EXPERT

runner = CliRunner()


def cli(root, *args):
    return runner.invoke(app, ["--zoo", str(root), *map(str, args)])


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory, bert_dir):
    tmp = tmp_path_factory.mktemp("izoo")
    zoo = helpers.new_zoo(tmp / "zoo", bert_dir)
    for name, rule, seed in (("t", "a", 0), ("s", "a", 5), ("u", "b", 6)):
        f, e = helpers.task_files(tmp, rule, "classification", n=120, seed=seed, n_eval=40)
        helpers.train(zoo, name, f, e, epochs=4, seed=seed)
    return zoo


def _experts(zoo, em, names):
    return [split_head(load_file(zoo.task_dir(n) / EXPERT))[0] for n in names]


def _batch(em):
    rows = em.encode(helpers.ex(["w1 w2 w3 w4", "w9 w30", "w17 w18 w19"]), [0, 1, 1])
    return em.collate(rows)


def test_alpha_favouring_one_expert_reproduces_it(small_zoo):
    em, _ = load_task_model(small_zoo, "t")
    s, u = _experts(small_zoo, em, ["s", "u"])
    mix = Mixture(em, [s, u], MixSpec())
    with torch.no_grad():
        mix.alpha.copy_(torch.tensor([[-200.0, 200.0, -200.0]]))
        via_mix = em.log_probs(_batch(em), mix.mixed())
        ref, _ = load_task_model(small_zoo, "t")
        ref.load_state({**s, **{k: v for k, v in ref.state().items() if k.startswith("head.")}})
        assert torch.allclose(via_mix, ref.log_probs(_batch(em)), atol=1e-6)
        mix.alpha.copy_(torch.tensor([[200.0, -200.0, -200.0]]))  # all on the target: the target itself
        assert torch.allclose(em.log_probs(_batch(em), mix.mixed()), em.log_probs(_batch(em)), atol=1e-6)


def test_uniform_alpha_over_identical_experts_reproduces_the_expert(small_zoo):
    em, _ = load_task_model(small_zoo, "t")
    (t,) = _experts(small_zoo, em, ["t"])
    mix = Mixture(em, [t, t], MixSpec())
    assert torch.allclose(mix.weights(), torch.full((1, 3), 1 / 3))
    with torch.no_grad():
        assert torch.allclose(em.log_probs(_batch(em), mix.mixed()), em.log_probs(_batch(em)), atol=1e-6)


@pytest.mark.parametrize("mode", ["full", "alpha"])
def test_gradients_reach_alpha_and_only_in_full_mode_the_experts(small_zoo, mode):
    em, _ = load_task_model(small_zoo, "t")
    s, u = _experts(small_zoo, em, ["s", "u"])
    mix = Mixture(em, [s, u], MixSpec(mode=mode, granularity="layer"))
    mix(_batch(em)).backward()
    assert mix.alpha.grad is not None and mix.alpha.grad.abs().sum() > 0
    assert mix.alpha.shape == (len({em.kind.site(n) for n in em.expert}), 3)
    expert_grads = [p.grad for plist in mix.extra for p in plist] + [p.grad for p in em.expert.values()]
    if mode == "full":
        assert all(g is not None and g.abs().sum() > 0 for g in expert_grads)
    else:
        assert all(g is None for g in expert_grads)


def test_alpha_mode_leaves_experts_unchanged_and_result_is_their_mixture(small_zoo):
    zoo = small_zoo
    before = {n: load_file(zoo.task_dir(n) / EXPERT) for n in ("t", "s", "u")}
    r = cli(zoo.root, "interpolate", "--target", "t", "--with", "s,u", "--mode", "alpha", "--steps", "15",
            "--as", "t-alpha", "--device", "cpu", "--no-keep-best", "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["kept"] == "interpolated" and not rec["keep_best"]
    w = rec["alpha"]["expert"]
    assert len(w) == 3 and sum(w) == pytest.approx(1.0, abs=1e-5) and w != [1 / 3] * 3
    result = load_file(zoo.task_dir("t-alpha") / EXPERT)
    for n, t in before["t"].items():
        if n.startswith("head."):
            assert torch.equal(result[n], t)  # alpha mode: the target's head is not tuned either
            continue
        mixed = w[0] * t + w[1] * before["s"][n] + w[2] * before["u"][n]
        assert torch.allclose(result[n], mixed, atol=1e-5), n
    for n in before:  # sources untouched on disk
        assert all(torch.equal(before[n][k], v) for k, v in load_file(zoo.task_dir(n) / EXPERT).items())
    zoo.remove_task("t-alpha")


def test_result_record_and_it_is_an_ordinary_task(small_zoo):
    zoo = small_zoo
    r = cli(zoo.root, "interpolate", "--target", "t", "--k", "2", "--steps", "10", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["task"] == "t-pi" and rec["target"] == "t" and rec["mode"] == "full"
    assert [s["task"] for s in rec["sources"]] and all(-1 <= s["similarity"] <= 1 for s in rec["sources"])
    for key in ("accuracy", "accuracy_target", "accuracy_uniform_mixture"):
        assert 0 <= rec["metrics"][key] <= 1
    m = zoo.manifest("t-pi")
    assert set(m.files) == {"expert.safetensors", "fisher.h5", "data/train.parquet", "data/eval.parquet"}
    assert m.labels == zoo.manifest("t").labels
    got, want = load_file(zoo.task_dir("t-pi") / EXPERT), load_file(zoo.task_dir("t") / EXPERT)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    assert evaluate_task(zoo, "t-pi").accuracy == pytest.approx(rec["metrics"]["accuracy"], abs=0)
    # a derived task is not offered back to its target as a source
    # (nor shown by `similar`, which ranks the candidates interpolate takes)
    r = cli(zoo.root, "similar", "t", "--json")
    assert r.exit_code == 0 and "t-pi" not in r.stdout
    from pizoo.interpolate import choose_sources

    assert "t-pi" not in [c.task for c in choose_sources(zoo, "t", k=2)]
    # nor is a third task offered t and t-pi as if they were two tasks: one version per root
    both = [c.task for c in choose_sources(zoo, "u", k=2)]
    assert len({n.removesuffix("-pi") for n in both}) == 2 and {"s"} <= set(both)
    assert rec["root"] == "t" and zoo.manifest("t-pi").provenance["interpolation"]["root"] == "t"
    zoo.remove_task("t-pi")


def test_bad_input_writes_nothing(small_zoo):
    zoo = small_zoo
    before = helpers.tree(zoo.root)
    cases = [
        (("--target", "nope"), 1, "no task 'nope'"),
        (("--target", "t", "--with", "t,s"), 2, "names the target"),
        (("--target", "t", "--with", "s,ghost"), 1, "'ghost', which is not in"),
        (("--target", "t", "--k", "0"), 2, "--k must be at least 1"),
        (("--target", "t", "--k", "9"), 2, "--k 9 is more than the 2 other"),
        (("--target", "t", "--as", "s"), 1, "task 's' already exists"),
        (("--target", "t", "--mode", "both"), 2, "--mode 'both' is not one of"),
        (("--target", "t", "--zero-shot"), 2, "--zero-shot and --data go together"),
    ]
    for args, code, message in cases:
        r = cli(zoo.root, "interpolate", *args, "--steps", "1")
        assert r.exit_code == code and message in r.stderr, (args, r.stderr)
    assert helpers.tree(zoo.root) == before


def test_tasks_without_embeddings_say_how_to_compute_them(small_zoo, tmp_path):
    zoo = small_zoo
    zoo.update_task("u", {}, lambda m: m.replace(files={k: h for k, h in m.files.items() if k != "fisher.h5"}))
    try:
        r = cli(zoo.root, "interpolate", "--target", "u", "--steps", "1")
        assert r.exit_code == 1 and "no Fisher embedding" in r.stderr and "pizoo embed u" in r.stderr
    finally:
        assert cli(zoo.root, "embed", "u").exit_code == 0


def test_experts_of_another_spec_are_refused(small_zoo, bert_dir, tmp_path):
    zoo = small_zoo
    other = helpers.new_zoo(tmp_path / "r4", bert_dir, r=4)
    f, e = helpers.task_files(tmp_path, "a", "classification", n=40, n_eval=20)
    helpers.train(other, "x", f, e, epochs=1, embed=False)
    foreign = load_file(other.task_dir("x") / EXPERT)
    from pizoo.models import save_tensors

    saved = load_file(zoo.task_dir("s") / EXPERT)
    zoo.update_task("s", {EXPERT: lambda p: save_tensors(foreign, p)}, lambda m: m)
    try:
        before = helpers.tree(zoo.root)
        r = cli(zoo.root, "interpolate", "--target", "t", "--with", "s", "--steps", "1")
        assert r.exit_code == 1 and "does not have this zoo's expert shape" in r.stderr
        assert helpers.tree(zoo.root) == before
    finally:
        zoo.update_task("s", {EXPERT: lambda p: save_tensors(saved, p)}, lambda m: m)


def test_curve_json_and_png(small_zoo, tmp_path):
    zoo = small_zoo
    png = tmp_path / "c.png"
    r = cli(zoo.root, "curve", "--target", "t", "--with", "s", "--points", "5", "--out", png, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert [p["t"] for p in d["points"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert d["points"][0]["accuracy"] == pytest.approx(evaluate_task(zoo, "t").accuracy, abs=0)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert cli(zoo.root, "curve", "--target", "t", "--with", "t").exit_code == 2


def test_zero_shot_transfer(small_zoo, tmp_path):
    zoo = small_zoo
    f = helpers.write_rows(helpers.make_rows("a", 40, 77), tmp_path / "new.csv")
    r = cli(zoo.root, "interpolate", "--target", "new", "--data", f, "--zero-shot", "--k", "2", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n"] == 40 and len(d["sources"]) == 2 and 0 <= d["accuracy"] <= 1
    other_labels = helpers.write_rows(helpers.make_rows("a", 40, 77, labels=("red", "blue")), tmp_path / "rb.csv")
    r = cli(zoo.root, "interpolate", "--target", "new", "--data", other_labels, "--zero-shot")
    assert r.exit_code == 1 and "cannot transfer across label sets" in r.stderr


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_with_both_granularities(kind, bert_dir, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "zoo", bert_dir, kind)
    for name, seed in (("t", 0), ("s", 1)):
        f, e = helpers.task_files(tmp_path, "a", "classification", n=40, seed=seed, n_eval=20)
        helpers.train(zoo, name, f, e, epochs=2, seed=seed, embed=False)
    cfg = TrainConfig(steps=5, lr=get_kind(kind).default_lr, device="cpu")
    shapes = {k: v.shape for k, v in load_file(zoo.task_dir("t") / EXPERT).items()}
    for gran in ("expert", "layer"):
        m = interpolate_task(zoo, "t", cfg, with_=["s"], spec=MixSpec(granularity=gran), name=f"t-{gran}")
        got = load_file(zoo.task_dir(m.name) / EXPERT)
        assert {k: v.shape for k, v in got.items()} == shapes
        assert m.provenance["interpolation"]["granularity"] == gran
        assert evaluate_task(zoo, m.name).n == 20
    assert zoo.verify() == []


@pytest.mark.parametrize("seed", [0, 1])
def test_few_shot_interpolation_beats_the_target_alone(seed, bert_dir, tmp_path):
    """A target with 8 shots per class, a source trained on the same rule with plenty of data, and
    an unrelated task. Measured (LoRA at its default lr 2e-3, tiny BERT): seed 0 target alone 0.51,
    interpolated 0.80; seed 1: 0.59 -> 0.74. The smallest gain was +0.15; the test asks for +0.10."""
    zoo = helpers.new_zoo(tmp_path / "zoo", bert_dir)
    fs, es = helpers.task_files(tmp_path, "a", "classification", n=400, seed=10)
    ft, et = helpers.task_files(tmp_path, "a", "classification", n=200, seed=seed)
    fb, eb = helpers.task_files(tmp_path, "b", "classification", n=400, seed=20)
    helpers.train(zoo, "src", fs, es, epochs=25)
    helpers.train(zoo, "other", fb, eb, epochs=25)
    target = helpers.train(zoo, "tgt", ft, et, epochs=25, shots=8, seed=seed)
    cfg = TrainConfig(epochs=25, seed=seed, lr=get_kind("lora").default_lr, device="cpu")
    m = interpolate_task(zoo, "tgt", cfg, k=2, embed=False)
    assert m.provenance["interpolation"]["sources"][0]["task"] == "src"
    assert m.metrics["n_train"] == 16
    assert m.metrics["accuracy"] >= target.metrics["accuracy"] + 0.1, (m.metrics, target.metrics)


def test_init_target_favours_the_target(small_zoo):
    from pizoo.mixture import TARGET_WEIGHT

    em, _ = load_task_model(small_zoo, "t")
    s, u = _experts(small_zoo, em, ["s", "u"])
    w = Mixture(em, [s, u], MixSpec(init="target", granularity="layer")).weights()
    assert torch.allclose(w[:, 0], torch.full((w.shape[0],), TARGET_WEIGHT))
    assert torch.allclose(w[:, 1], w[:, 2])
