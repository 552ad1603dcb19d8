"""--k auto (how many and which sources), --keep-best (never save a result worse than the target's
own expert) and the landscape over the plane through three experts, on a tiny match-head zoo:
one related source (the target's rule, more data), and unrelated ones (the opposite labels, an
unrelated rule)."""

import json
import shutil

import helpers
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from pizoo.cli import app
from pizoo.errors import UsageError
from pizoo.evaluate import evaluate_task
from pizoo.interpolate import choose_sources, interpolate_task
from pizoo.landscape import axis, landscape
from pizoo.predict import base_fit
from pizoo.tasks import load_task_model, task_data
from pizoo.train import TrainConfig
from pizoo.zoo import EXPERT, Zoo

runner = CliRunner()
CFG = TrainConfig(epochs=10, seed=0, lr=5e-3, device="cpu")


def cli(root, *args):
    return runner.invoke(app, ["--zoo", str(root), *map(str, args)])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, bert_dir):
    tmp = tmp_path_factory.mktemp("choose")
    z = helpers.new_zoo(tmp / "zoo", bert_dir, head="match")

    def files(name, rule, seed, labels=("neg", "pos")):
        train = helpers.write_rows(helpers.make_rows(rule, 200, seed, labels=labels), tmp / f"{name}.csv")
        held = helpers.write_rows(helpers.make_rows(rule, 60, seed + 1000, labels=labels), tmp / f"{name}-eval.csv")
        return train, held

    for name, rule, seed, labels in (("related", "a", 1, ("neg", "pos")), ("opposite", "a", 2, ("pos", "neg")),
                                     ("other-rule", "b", 3, ("neg", "pos"))):
        helpers.train(z, name, *files(name, rule, seed, labels), epochs=20, seed=seed)
    train, held = files("t", "a", 0)
    helpers.train(z, "few", train, held, epochs=20, seed=0, shots=8)  # 8 per class: near chance alone
    helpers.train(z, "full", train, held, epochs=20, seed=0)
    return z


def _clone(zoo, dest, drop=()):
    shutil.copytree(zoo.root, dest)
    z = Zoo(dest)
    for name in drop:
        z.remove_task(name)
    return z


def test_k_auto_picks_the_related_source_not_the_most_similar(zoo, tmp_path):
    z = _clone(zoo, tmp_path / "z", drop=["full"])  # one related task: `related`
    from pizoo.embed import similar

    by_expert = [r.task for r in similar(z, "few")]
    assert by_expert[0] != "related"  # the Fisher at each task's own expert (the old ranking) puts another first
    by_fisher = [c.task for c in choose_sources(z, "few", k=None)]  # the probe Fisher
    out = interpolate_task(z, "few", CFG, k="auto", name="few-auto")
    rec = out.provenance["interpolation"]
    auto = rec["auto"]
    assert [s["task"] for s in rec["sources"]] == ["related"], auto
    assert rec["k"] == auto["k"] == 1 and rec["kept"] == "interpolated"
    ranked = auto["candidates"]
    assert rec["by"] == "both" and ranked[0] == "related" and sorted(ranked) == sorted(by_fisher)  # the fit puts it first
    assert {tuple(p["sources"]) for p in auto["probes"]} >= {(c,) for c in ranked}  # one probe per candidate
    assert auto["probes"][0]["sources"] == []  # the control: the target's expert alone, trained as long
    assert all(p["steps"] == 3 for p in auto["probes"])  # a quarter of the run's 10 steps, rounded up
    assert auto["cost_interpolations"] == pytest.approx(1 + 3 * len(auto["probes"]) / 10)
    assert out.metrics["accuracy"] > out.metrics["accuracy_target"]


def test_k_auto_with_only_unrelated_sources_keeps_the_own_expert_and_says_so(zoo, tmp_path):
    z = _clone(zoo, tmp_path / "z", drop=["related", "few"])  # left: tasks of another rule or the opposite labels
    own = load_file(z.task_dir("full") / EXPERT)
    r = cli(z.root, "interpolate", "--target", "full", "--k", "auto", "--device", "cpu", "--epochs", "10",
            "--lr", "5e-3", "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["k"] == rec["auto"]["k"] == 0 and rec["sources"] == [], (rec["auto"], rec["metrics"])
    assert "k = 0" in rec["auto"]["reason"]
    assert sorted(rec["auto"]["candidates"]) == ["opposite", "other-rule"]
    # k = 0 keeps the better of the own expert and the control (the own expert trained as long as a
    # probe), the control only when it is better beyond noise; the record names it and its score
    control = rec["auto"]["probes"][0]
    kept = {"control": "kept the control", "target": "kept the target's own expert"}[rec["kept"]]
    assert control["sources"] == [] and kept in rec["auto"]["reason"], (rec["kept"], rec["auto"]["reason"])
    saved = load_file(z.task_dir("full-pi") / EXPERT)
    assert saved.keys() == own.keys() and all(torch.equal(saved[n], own[n]) for n in own) == (rec["kept"] == "target")
    assert rec["metrics"]["accuracy"] == rec["finalists"][rec["kept"]]["accuracy"]
    assert rec["metrics"]["accuracy"] == (control["accuracy"] if rec["kept"] == "control"
                                          else rec["metrics"]["accuracy_target"])
    r = cli(z.root, "interpolate", "--target", "full", "--k", "auto", "--as", "again", "--device", "cpu", "--epochs", "10",
            "--lr", "5e-3")
    assert r.exit_code == 0 and "k = 0" in r.output and kept in r.output  # the same run again: the same choice


def _eval_score(z, name, target):
    em, _ = load_task_model(z, name)
    td = task_data(z, target)
    return em.score(em.encode(td.eval, td.label_ids(td.eval)))


@pytest.mark.parametrize("target, source", [("few", "related"), ("full", "opposite")])
def test_keep_best_never_saves_a_result_worse_than_the_own_expert(zoo, tmp_path, target, source):
    """What is saved is never worse than the target's own expert beyond noise on the eval split
    (pizoo.choose.compare: accuracy, then the calibrated log-likelihood, paired), and it is the
    expert that was scored."""
    from pizoo.choose import compare

    z = _clone(zoo, tmp_path / "z")
    out = interpolate_task(z, target, CFG, with_=[source], k=1, name="kept")
    raw = interpolate_task(z, target, CFG, with_=[source], k=1, name="raw", keep_best=False)
    m, rec = out.metrics, out.provenance["interpolation"]
    assert raw.provenance["interpolation"]["kept"] == "interpolated"  # --no-keep-best saves the result as it is
    assert m["accuracy_interpolated"] == raw.metrics["accuracy"]  # the same run, seeded; only the choice differs
    assert set(rec["finalists"]) == {"interpolated", "target", "uniform mixture", f"source {source}", "base"}
    assert rec["kept"] in rec["finalists"]
    em, _ = load_task_model(z, target)  # the base finalist is the zoo's untrained starting expert
    td = task_data(z, target)
    assert rec["finalists"]["base"]["accuracy"] == base_fit(em, em.encode(td.eval, td.label_ids(td.eval))).accuracy
    saved, own = _eval_score(z, "kept", target), _eval_score(z, target, target)
    assert saved.accuracy == m["accuracy"] == rec["finalists"][rec["kept"]]["accuracy"]  # saved = scored
    assert compare(own, saved) <= 0
    if target == "few":  # the related source lifts a near-chance 8-shot expert beyond noise
        assert rec["kept"] == "interpolated" and compare(saved, own) > 0


def test_keep_best_gives_back_the_base_model_where_the_own_expert_is_worse(tmp_path, bert_dir):
    """A target whose own expert is worse than no training at all (trained on labels that contradict
    its eval set, as is its only source) gets the zoo's untrained starting expert back, and the log
    says why."""
    z = helpers.new_zoo(tmp_path / "zoo", bert_dir, head="match")
    held = helpers.write_rows(helpers.make_rows("a", 60, 6, labels=("neg", "pos")), tmp_path / "held.csv")
    for name, seed in (("anti", 5), ("anti-too", 7)):
        flipped = helpers.write_rows(helpers.make_rows("a", 200, seed, labels=("pos", "neg")), tmp_path / f"{name}.csv")
        helpers.train(z, name, flipped, held, epochs=30, seed=0, lr=2e-2)
    r = cli(z.root, "interpolate", "--target", "anti", "--as", "anti-pi", "--epochs", "2", "--device", "cpu")
    assert r.exit_code == 0 and "kept the base model (the zoo's untrained starting expert)" in r.output, r.output
    assert "it beat the target result on the eval split: accuracy" in r.output
    rec = z.manifest("anti-pi").provenance["interpolation"]
    assert rec["kept"] == "base" and rec["finalists"]["base"]["accuracy"] > rec["finalists"]["target"]["accuracy"]
    em, _ = load_task_model(z, "anti-pi")
    assert all(torch.equal(em.state()[n], em.initial_state[n]) for n in em.expert)  # what was saved is the base


def test_the_log_says_what_a_kept_finalist_won_on():
    """why_better names the score that decided: accuracy beyond noise, else the calibrated
    log-likelihood (a tie in accuracy, as in the demo: probe 0.550 kept over interpolated 0.567)."""
    from pizoo.choose import compare, why_better
    from pizoo.models import score_of

    gold = torch.tensor([0, 1] * 10)
    right = torch.nn.functional.one_hot(gold, 2).float()  # margins: 4 each; 0.01 to 0.3 (right, less sure); -1
    sure, unsure, wrong = (score_of(m * right, gold) for m in (4.0, torch.linspace(0.01, 0.3, 20)[:, None], -1.0))
    assert compare(sure, wrong) > 0 and why_better(sure, wrong) == "accuracy 1.000 against 0.000, beyond noise"
    assert compare(sure, unsure) > 0 and "within noise" in why_better(sure, unsure)
    assert "calibrated log-likelihood decided" in why_better(sure, unsure)


def test_keep_best_offers_each_source_alone_and_saves_it_when_it_wins(zoo, tmp_path):
    """In a shared label space a source's expert alone (α one-hot on it, no target data) is a
    finalist, scored as `eval` scores it across tasks; when the tuning goes wrong (an lr far too high
    wrecks the mixture) and the source is better beyond noise, that very expert is saved."""
    z = _clone(zoo, tmp_path / "z")
    r = cli(z.root, "interpolate", "--target", "few", "--with", "related,other-rule", "--as", "few-src", "--lr", "1.0",
            "--epochs", "10", "--device", "cpu")
    assert r.exit_code == 0 and "kept the expert of related alone" in r.output, r.output
    assert "it beat the interpolated result on the eval split: accuracy" in r.output  # and says why
    rec = z.manifest("few-src").provenance["interpolation"]
    assert {"source related", "source other-rule"} <= set(rec["finalists"])
    assert rec["finalists"]["source related"]["accuracy"] == _eval_score(z, "related", "few").accuracy
    assert rec["kept"] == "source related", rec["finalists"]
    saved, src = load_file(z.task_dir("few-src") / EXPERT), load_file(z.task_dir("related") / EXPERT)
    assert saved.keys() == src.keys() and all(torch.equal(saved[n], src[n]) for n in src)


def test_bad_k_is_one_line_and_changes_nothing(zoo, tmp_path):
    z = _clone(zoo, tmp_path / "z")
    before = helpers.tree(z.root)
    for args, words in ((["--k", "many"], "number of sources or 'auto'"), (["--k", "0"], "at least 1"),
                        (["--k", "auto", "--zero-shot", "--data", tmp_path / "x.csv"], "--k auto needs")):
        r = cli(z.root, "interpolate", "--target", "few", *args)
        assert r.exit_code == 2 and words in r.output, r.output
    assert helpers.tree(z.root) == before


def test_k_auto_among_the_with_tasks(zoo, tmp_path):
    z = _clone(zoo, tmp_path / "z", drop=["full"])
    out = interpolate_task(z, "few", CFG, k="auto", with_=["opposite", "related"], name="among")
    auto = out.provenance["interpolation"]["auto"]
    assert auto["candidates"] == ["opposite", "related"]
    assert [s["task"] for s in out.provenance["interpolation"]["sources"]] == ["related"]


def test_in_alpha_mode_the_control_probe_is_the_own_expert_and_costs_nothing(zoo, tmp_path):
    from pizoo.mixture import MixSpec

    z = _clone(zoo, tmp_path / "z", drop=["full"])
    out = interpolate_task(z, "few", CFG, k="auto", with_=["related"], spec=MixSpec(mode="alpha"), name="a")
    auto, m = out.provenance["interpolation"]["auto"], out.metrics
    control = auto["probes"][0]
    assert control["sources"] == [] and control["steps"] == 0  # nothing trains in alpha mode without a source
    assert control["accuracy"] == m["accuracy_target"] and control["log_likelihood"] == round(m["log_likelihood_target"], 6)


def test_alpha_mode_fits_alpha_on_the_held_out_split_and_is_judged_out_of_fold(zoo, tmp_path):
    """--alpha-on held-out: α is fitted on the eval split (where the target's expert has not fitted
    the data), and the interpolated expert's eval score is the two folds' out-of-fold score."""
    from pizoo.interpolate import HELD_OUT_MIN
    from pizoo.mixture import MixSpec, Mixture
    from pizoo.models import score_of
    from pizoo.tasks import load_task_model, task_data
    from pizoo.train import fit

    z = _clone(zoo, tmp_path / "z", drop=["full"])
    cfg = TrainConfig(steps=12, seed=0, lr=5e-3, device="cpu")
    out = {on: interpolate_task(z, "few", cfg, with_=["related"], spec=MixSpec(mode="alpha"), name=f"a-{on}",
                                keep_best=False, alpha_on=on, embed=False) for on in ("train", "held-out")}
    rec = {on: o.provenance["interpolation"] for on, o in out.items()}
    assert rec["train"]["alpha_fitted_on"] == "train split"
    assert rec["held-out"]["alpha_fitted_on"].startswith("eval split, two-fold")
    assert rec["held-out"]["steps"] == rec["train"]["steps"] == 12  # the same compute

    em, m = load_task_model(z, "few")
    td = task_data(z, "few", m)
    rows = em.encode(td.eval, td.label_ids(td.eval))
    assert len(rows) >= HELD_OUT_MIN
    related = {n: t for n, t in load_file(z.task_dir("related") / EXPERT).items() if not n.startswith("head.")}

    def alpha_on(part):
        mix = Mixture(em, [related], MixSpec(mode="alpha"))
        fit(mix, part, em.collate, cfg, lr_overrides={id(mix.alpha): 0.05})
        return mix

    whole = alpha_on(rows)  # the α kept: fitted on the whole eval split
    assert whole.alpha_record()["expert"] == pytest.approx(rec["held-out"]["alpha"]["expert"], abs=1e-5)
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["label"], i))
    folds = [sorted(order[0::2]), sorted(order[1::2])]
    scores = torch.empty(len(rows), len(em.labels))
    for a, b in ((0, 1), (1, 0)):  # each half scored by the α of the other
        mix = alpha_on([rows[i] for i in folds[a]])
        scores[folds[b]] = em.class_scores([rows[i] for i in folds[b]], params=mix.mixed())
    oof = score_of(scores, torch.tensor([r["label"] for r in rows]))
    assert out["held-out"].metrics["accuracy_interpolated"] == pytest.approx(oof.accuracy)
    assert out["held-out"].metrics["log_likelihood_interpolated"] == pytest.approx(oof.log_likelihood, abs=1e-5)
    with pytest.raises(UsageError, match="--alpha-on"):
        interpolate_task(z, "few", cfg, with_=["related"], spec=MixSpec(mode="alpha"), name="x", alpha_on="eval")


def test_axis_has_the_experts_on_it():
    assert axis(4, 0.25) == [-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    assert axis(3, 0.0) == [0.0, 1 / 3, 2 / 3, 1.0]


def test_landscape_corners_are_the_three_experts_exactly(zoo, tmp_path):
    z = _clone(zoo, tmp_path / "z")
    interpolate_task(z, "few", CFG, with_=["related", "opposite"], name="few-pi", keep_best=False)
    res = landscape(z, "few", ["related", "opposite"], resolution=2, margin=0.5, samples=None)
    assert len(res.grid) == len(res.values) ** 2 == 25 and res.n == 60
    grid = {(g["a"], g["b"]): g for g in res.grid}
    for (a, b), name in (((0.0, 0.0), "few"), ((1.0, 0.0), "related"), ((0.0, 1.0), "opposite")):
        assert grid[a, b]["accuracy"] == evaluate_task(z, name, on="few").accuracy, name
    points = {p["role"]: p for p in res.points if p["role"] != "source"}
    assert points["target"]["x"] == points["target"]["y"] == 0.0
    assert points["soup"]["a"] == points["soup"]["b"] == pytest.approx(1 / 3)
    pi = points["pi"]  # found by itself: the target's interpolation with exactly these two
    assert pi["name"] == "few-pi" and pi["accuracy"] == evaluate_task(z, "few-pi").accuracy
    assert 0 <= pi["off_plane"] < 1
    # the distances in the plane are the true distances between the experts
    flat = {n: torch.cat([t.double().flatten() for _, t in sorted(
        {k: v for k, v in load_file(z.task_dir(n) / EXPERT).items()}.items())]) for n in ("few", "related")}
    src = next(p for p in res.points if p["name"] == "related")
    assert (src["x"] ** 2 + src["y"] ** 2) ** 0.5 == pytest.approx(float((flat["related"] - flat["few"]).norm()))


def test_landscape_cli_writes_the_png_and_json_and_refuses_bad_input(zoo, tmp_path):
    z = _clone(zoo, tmp_path / "z")
    before = helpers.tree(z.root)
    out = tmp_path / "plane.png"
    r = cli(z.root, "landscape", "--target", "few", "--resolution", "1", "--margin", "0", "--samples", "20",
            "--out", out, "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(rec["grid"]) == 4 and rec["n"] == 20
    assert len(rec["with"]) == 2 and "few" not in rec["with"]
    for args, words in ((["--with", "related"], "two others"), (["--with", "related,nope"], "nope"),
                        (["--resolution", "0"], "at least 1"), (["--with", "few,related"], "target")):
        r = cli(z.root, "landscape", "--target", "few", "--out", tmp_path / "bad.png", *args)
        assert r.exit_code != 0 and words in r.output, r.output
        assert not (tmp_path / "bad.png").exists()
    assert helpers.tree(z.root) == before


def test_k_auto_is_the_default_and_with_means_all_of_those(zoo, tmp_path):
    z = _clone(zoo, tmp_path / "z")
    r = cli(z.root, "interpolate", "--target", "few", "--steps", "4", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert "auto" in rec and rec["k"] == rec["auto"]["k"]
    r = cli(z.root, "interpolate", "--target", "few", "--with", "opposite,related", "--steps", "4", "--as", "w",
            "--device", "cpu", "--json")
    rec = json.loads(r.stdout)
    assert r.exit_code == 0 and "auto" not in rec and [s["task"] for s in rec["sources"]] == ["opposite", "related"]


def _score(correct, ll):
    """A Score with per-example outcomes and (calibrated) log-likelihoods, as ExpertModel.score makes."""
    from pizoo.models import Score

    c = torch.tensor(correct, dtype=torch.float)
    each = torch.tensor(ll, dtype=torch.float)
    return Score(float(c.mean()), sum(ll) / len(ll), c, float(each.mean()), each, 1.0)


def test_better_lets_accuracy_decide_only_beyond_noise():
    from pizoo.choose import better

    own = _score([1] * 20 + [0] * 20, [-0.5] * 40)
    one_more = _score([1] * 21 + [0] * 19, [-0.9] * 40)  # one example flipped, a far worse likelihood
    assert not better(one_more, own) and better(own, one_more)  # one example is noise: the likelihood decides
    many_more = _score([1] * 32 + [0] * 8, [-0.9] * 40)  # twelve more right: beyond noise
    assert better(many_more, own) and not better(own, many_more)
    same = _score([1] * 20 + [0] * 20, [-0.4] * 40)
    assert better(same, own) and not better(own, same)
    assert not better(own, own)  # strict: a tie is not better
    noisy = _score([1] * 20 + [0] * 20, [-0.4, -0.6] * 20)  # the same mean likelihood as own, within noise
    wobbly = _score([1] * 20 + [0] * 20, [-0.3, -0.69] * 20)  # a better mean, but within noise of own
    assert better(wobbly, own) and not better(own, wobbly) and not better(noisy, own)  # choosing: the mean
    assert not better(wobbly, own, strict=True) and not better(own, wobbly, strict=True)  # keeping: beyond noise
    plain = lambda s: type(s)(s.accuracy, s.log_likelihood)  # noqa: E731  no per-example outcomes
    assert better(plain(one_more), plain(own))  # then accuracy first, as Score orders


def test_choose_ranks_near_ties_by_likelihood_and_keeps_the_smaller_set():
    from pizoo.choose import Probe, choose

    own = _score([1] * 20 + [0] * 20, [-0.6] * 40)
    singles = {"flip": _score([1] * 21 + [0] * 19, [-0.8] * 40),  # one example more, worse likelihood
               "calm": _score([1] * 20 + [0] * 20, [-0.45] * 40),
               "good": _score([1] * 20 + [0] * 20, [-0.5] * 40)}
    sets = {("calm", "good"): _score([1] * 20 + [0] * 20, [-0.47] * 40)}  # worse than calm alone
    calls = []

    def probe(names):
        calls.append(tuple(names))
        if not names:  # the control: the own expert, trained as long, no better
            return Probe((), own, 3)
        return Probe(tuple(names), singles[names[0]] if len(names) == 1 else sets[tuple(names)], 3)

    c = choose(["flip", "calm", "good"], own, probe)
    assert c.sources == ("calm",) and calls[-1] == ("calm", "good")  # best first; the pair did not beat calm
    assert "k = 1" in c.reason
    assert choose(["flip"], own, probe).sources == ()  # no helpful candidate: k = 0


def test_a_probe_must_beat_the_target_trained_as_long_not_only_the_target():
    from pizoo.choose import Probe, choose

    own = _score([1] * 20 + [0] * 20, [-0.6] * 40)
    control = _score([1] * 20 + [0] * 20, [-0.4] * 40)  # extra steps alone help the likelihood
    singles = {"some": _score([1] * 20 + [0] * 20, [-0.5] * 40), "more": _score([1] * 20 + [0] * 20, [-0.3] * 40)}
    probe = lambda names: Probe(tuple(names), singles[names[0]] if names else control, 3)  # noqa: E731
    c = choose(["some"], own, probe)
    assert c.sources == () and c.control_wins  # beats own, not the control: extra steps, not transfer
    # the reason names what the probes were held to and what was kept, with its score
    assert "scored above the control" in c.reason and "kept the control" in c.reason and "accuracy 0.500" in c.reason
    assert choose(["some", "more"], own, probe).sources[0] == "more"


# -- predict: the fit of each expert to the target's examples (pizoo.predict) ----------------------
def _few_rows(z):
    from pizoo.tasks import load_task_model, task_data

    em, m = load_task_model(z, "few")
    td = task_data(z, "few", m)
    return em, em.encode(td.train, td.label_ids(td.train))


def test_fit_of_an_expert_on_its_own_kind_of_data_beats_a_random_and_an_opposite_expert(zoo):
    from pizoo.interpolate import load_expert_part
    from pizoo.predict import fit_scores

    em, rows = _few_rows(zoo)
    related = load_expert_part(zoo, "related", em)
    gen = torch.Generator().manual_seed(0)
    random = {n: torch.randn(t.shape, generator=gen) * t.std() for n, t in related.items()}
    fits = fit_scores(em, rows, {"related": related, "random": random,
                                 "opposite": load_expert_part(zoo, "opposite", em)})
    rel, rnd, opp = fits["related"], fits["random"], fits["opposite"]
    assert rel.calibrated_log_likelihood > rnd.calibrated_log_likelihood and rel.accuracy > rnd.accuracy, fits
    assert rel.calibrated_log_likelihood > opp.calibrated_log_likelihood
    assert rel.accuracy > 0.6 and opp.accuracy < 0.4  # the same rule, and the same rule with labels swapped
    # the calibrated log-likelihood is at least the raw one (temperature 1 is on the grid)
    assert all(f.calibrated_log_likelihood >= f.log_likelihood - 1e-6 for f in fits.values())
    from pizoo.choose import compare
    from pizoo.predict import base_fit

    # against the frozen base model, on enough examples to tell (the 200 of `full`, the same rule):
    # the related expert beats it beyond noise, the opposite one is worse
    from pizoo.tasks import task_data

    td = task_data(zoo, "full")
    many = em.encode(td.train, td.label_ids(td.train))
    fits = fit_scores(em, many, {"related": related, "opposite": load_expert_part(zoo, "opposite", em)})
    base = base_fit(em, many)
    assert compare(fits["related"], base) > 0 and compare(fits["opposite"], base) < 0, (fits, base)


def test_similar_by_fit_and_both_through_the_cli_and_interpolate_takes_the_same_candidates(zoo, tmp_path):
    z = _clone(zoo, tmp_path / "z", drop=["full"])
    rows = {}
    for by in ("fit", "both", "fisher"):
        r = cli(z.root, "similar", "few", "--by", by, "--json")
        assert r.exit_code == 0, r.output
        rows[by] = [json.loads(line) for line in r.stdout.splitlines()]
        assert all(row["by"] == by and -1 <= row["similarity"] <= 1 for row in rows[by])
    for by in ("fit", "both"):  # both scores, best fit first
        lls = [row["fit_log_likelihood"] for row in rows[by]]
        assert lls == sorted(lls, reverse=True) and all(0 <= row["fit_accuracy"] <= 1 for row in rows[by])
        assert rows[by][0]["task"] == "related"
    assert all(row["fit_log_likelihood"] is None for row in rows["fisher"])
    assert [row["task"] for row in rows["fit"]] == [row["task"] for row in rows["both"]]
    r = cli(z.root, "similar", "few", "--k", "2")  # the table shows both scores and the cost
    assert r.exit_code == 0 and "fit_log_likelihood" in r.stdout and "s each" in r.stderr
    # interpolate proposes its candidates through the same path: the same order
    out = interpolate_task(z, "few", TrainConfig(steps=2, lr=5e-3, device="cpu"), k=2, name="few-2", embed=False,
                           keep_best=False)
    rec = out.provenance["interpolation"]
    assert [s["task"] for s in rec["sources"]] == [row["task"] for row in rows["both"][:2]]
    assert rec["sources"][0]["fit_log_likelihood"] == pytest.approx(rows["both"][0]["fit_log_likelihood"], abs=1e-6)
    r = cli(z.root, "similar", "few", "--by", "nope")
    assert r.exit_code == 2 and "--by" in r.stderr
    r = cli(z.root, "similar", "few", "--recall", "0")
    assert r.exit_code == 2 and "--recall must be at least 1" in r.stderr


def test_the_fit_stage_races_many_candidates_and_keeps_the_full_fit_for_the_best(zoo, tmp_path, monkeypatch):
    from pizoo import predict

    z = _clone(zoo, tmp_path / "z", drop=["full"])
    em, rows = _few_rows(z)
    exhaustive = predict.rank_sources(z, "few", by="fit", em=em, rows=rows)
    monkeypatch.setattr(predict, "RACE_KEEP", 1)  # 3 candidates > 1 kept; 16 rows > 6 in the heats
    monkeypatch.setattr(predict, "RACE_EXAMPLES", 6)
    scored = []
    real_scores = em.class_scores
    monkeypatch.setattr(em, "class_scores", lambda rs, *a, **kw: scored.append(len(rs)) or real_scores(rs, *a, **kw))
    raced = predict.rank_sources(z, "few", by="both", em=em, rows=rows)
    # the heats: the base and the 3 candidates on the 6 heat rows, cut short; then the base and the
    # one kept on all 16 whole rows
    assert sum(scored) == 6 + 3 * 6 + 16 + 16, scored
    monkeypatch.setattr(em, "class_scores", real_scores)
    assert raced.names()[0] == exhaustive.names()[0] == "related"
    first, *rest = raced.candidates
    assert first.fit_examples == len(rows) == 16 and all(c.fit_examples == 6 for c in rest)
    assert first.fit_log_likelihood == pytest.approx(exhaustive.candidates[0].fit_log_likelihood, abs=1e-6)
    assert sorted(raced.names()) == sorted(exhaustive.names())  # the race drops none: it orders them
    assert all(c.fit_examples == len(rows) for c in exhaustive.candidates)  # --by fit is exhaustive
    monkeypatch.setattr(predict, "RACE_KEEP", 2)  # one nominated by the embedding, one by the heats
    by_embedding = predict.rank_sources(z, "few", by="fisher").names()
    raced = predict.rank_sources(z, "few", by="both", em=em, rows=rows)
    full = [c.task for c in raced.candidates if c.fit_examples == len(rows)]
    assert len(full) == 2 and by_embedding[0] in full and "related" in full, (full, by_embedding)
    heat = predict.race_rows(rows, 6)
    assert sorted(r["label"] for r in heat) == [0, 0, 0, 1, 1, 1]  # labels in turn
    assert predict.race_rows(rows, 6) == heat
    assert predict.race_rows(rows, len(rows))[:6] == heat  # the later rounds go on from the heat rows


def test_the_race_halves_its_nominees_before_the_full_fit(zoo, tmp_path, monkeypatch):
    """Successive halving: 3 candidates on 4 rows, the 2 nominees on 4 more, the best on every row;
    each row is scored once per expert that sees it, and the full fit is the exhaustive one."""
    from pizoo import predict

    z = _clone(zoo, tmp_path / "z", drop=["full"])
    em, rows = _few_rows(z)
    exhaustive = predict.rank_sources(z, "few", by="fit", em=em, rows=rows)
    for name, value in (("RACE_EXAMPLES", 4), ("SEMI_EXAMPLES", 8), ("RACE_KEEP", 2), ("HEAT_TOKENS", 3)):
        monkeypatch.setattr(predict, name, value)
    scored, longest = [], []
    real_scores = em.class_scores

    def counted(rs, *a, **kw):
        scored.append(len(rs))
        longest.append(max(len(r["input_ids"]) for r in rs))
        return real_scores(rs, *a, **kw)

    monkeypatch.setattr(em, "class_scores", counted)
    raced = predict.rank_sources(z, "few", by="both", em=em, rows=rows)
    # heats on 4 short rows (the base, 3 candidates), the base on all 16, 2 on 8 whole rows, 1 on 8 more
    assert sum(scored) == 4 + 3 * 4 + 16 + 2 * 8 + 1 * 8, scored
    assert longest[:4] == [3] * 4 and min(longest[4:]) > 3  # the heats read rows cut to HEAT_TOKENS
    assert [c.fit_examples for c in raced.candidates] == [16, 8, 4]
    assert raced.candidates[0].task == "related"
    assert raced.candidates[0].fit_log_likelihood == pytest.approx(exhaustive.candidates[0].fit_log_likelihood, abs=1e-6)
    scored.clear()
    wide = predict.rank_sources(z, "few", by="both", em=em, rows=rows, count=2)  # --k 2: both get the full fit
    assert sum(scored) == 4 + 3 * 4 + 16 + 2 * 16 and [c.fit_examples for c in wide.candidates][:2] == [16, 16]


def test_similar_for_new_data_by_fit(zoo, tmp_path):
    f = helpers.write_rows(helpers.make_rows("a", 40, 77, labels=("neg", "pos")), tmp_path / "new.csv")
    r = cli(zoo.root, "similar", "--data", f, "--k", "2", "--json")
    assert r.exit_code == 0, r.output
    top = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(top) == 2 and top[0]["task"] in ("related", "full", "few") and top[0]["fit_accuracy"] > 0.6
    r = cli(zoo.root, "similar", "--data", f, "--by", "fisher", "--json")
    assert r.exit_code == 0 and all(json.loads(line)["fit_accuracy"] is None for line in r.stdout.splitlines())


def test_the_embedding_orders_what_the_fit_cannot_tell_apart():
    """The ranking's fit stage: a fit ahead beyond noise leads; where two fits differ by noise only,
    the higher Fisher similarity goes first (the ref-g case: mnist-digit 0.004 nats ahead of ref)."""
    from pizoo.predict import candidate, order

    base = _score([0] * 40, [-2.0] * 40)
    fits = {"digits": _score([1] * 16 + [0] * 24, [-1.44, -1.46] * 20),  # a hair ahead, within noise
            "sibling": _score([1] * 15 + [0] * 25, [-1.47, -1.44] * 20),
            "clear": _score([1] * 30 + [0] * 10, [-0.8] * 40)}  # ahead beyond noise, least similar
    sims = {"digits": 0.49, "sibling": 0.91, "clear": 0.10}
    scored = [candidate(n, sims[n], fits[n], base, 40) for n in fits]
    assert [c.task for c in order(scored)] == ["clear", "digits", "sibling"]  # by the fit's means alone
    assert [c.task for c in order(scored, fits)] == ["clear", "sibling", "digits"]
