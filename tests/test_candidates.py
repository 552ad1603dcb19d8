"""Examples that bring their own candidates (multiple choice): reading them as users have them,
scoring each example over its own candidates, and the rest of pizoo on such tasks unchanged."""

import json
import random

import helpers
import pytest
import torch
from typer.testing import CliRunner

from pizoo.candidates import gold_position, parse_choices, spread
from pizoo.cli import app
from pizoo.errors import DataError
from pizoo.experts import KINDS
from pizoo.fisher import fisher_diag
from pizoo.models import ExpertModel

runner = CliRunner()
KEYS = helpers.WORDS[:8]  # the answer words
FILLER = helpers.WORDS[40:60]


def cli(root, *args):
    return runner.invoke(app, ["--zoo", str(root), *map(str, args)])


def mc_rows(n: int, seed: int, gold_as: str = "letter") -> list[dict]:
    """Which of the candidates does the text name? 2 to 4 candidates per example (their number
    varies), the gold written as a letter, a 0-based index or the answer's text."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        answer = rng.choice(KEYS)
        others = rng.sample([w for w in KEYS if w != answer], rng.randint(1, 3))
        options = [answer, *others]
        rng.shuffle(options)
        text = " ".join(rng.sample(FILLER, 3) + [answer] + rng.sample(FILLER, 2))
        gold = {"letter": "ABCD"[options.index(answer)], "index": options.index(answer), "text": answer}[gold_as]
        rows.append({"text": text, "options": json.dumps(options), "answer": gold})
    return rows


def test_candidates_and_gold_are_read_in_every_form_users_have_them():
    assert parse_choices(["a", "b"], "r", "c") == ["a", "b"]
    assert parse_choices('["x y", "z"]', "r", "c") == ["x y", "z"]
    assert parse_choices("A. the cat\nB) a dog\n(C) fish", "r", "c") == ["the cat", "a dog", "fish"]
    opts = ["red", "blue", "green"]
    assert [gold_position(g, opts, "r", "l") for g in ("B", 1, 1.0, "1", "blue", "B. blue ", "B. Blue.")] == [1] * 7
    for bad, msg in ((["only"], "needs two or more"), ("just a sentence", "neither a list"),
                     ("A. x\nC. y", "neither a list"), ([["nested"], "b"], "not a list of answer texts"),
                     (["a", " "], "empty candidate"), (3, "not a list")):
        with pytest.raises(DataError, match=msg):
            parse_choices(bad, "row 1", "opts")
    for bad, msg in ((3, "out of range"), (-1, "out of range"), ("purple", "neither an index"),
                     (["a"], "not an index"), ("C. blue", "names option C")):
        with pytest.raises(DataError, match=msg):
            gold_position(bad, opts, "row 1", "answer")


def test_spread_scores_each_row_over_its_own_candidates_only():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    owner, slot = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 1, 0, 1, 2])
    out = spread(values, owner, slot, 2, 3)
    assert out[0, 2] == float("-inf") and out[1].tolist() == [3.0, 4.0, 5.0]
    probs = out.softmax(-1)
    assert torch.allclose(probs.sum(-1), torch.ones(2)) and probs[0, 2] == 0


def test_a_multiple_choice_task_trains_reloads_and_chooses_among_its_own_candidates(bert_dir, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "z", bert_dir, head="match")
    train = helpers.write_rows(mc_rows(120, 0), tmp_path / "mc.csv")
    held = helpers.write_rows(mc_rows(60, 1, gold_as="index"), tmp_path / "mc-eval.csv")
    r = cli(zoo.root, "add-task", "mc", "--data", train, "--eval-data", held, "--choices", "options", "--label",
            "answer", "--epochs", 15, "--lr", 5e-3, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    m = rec["metrics"]
    assert rec["labels"] == ["0", "1", "2", "3"]  # the positions of the widest example's candidates
    # chance over 2-4 candidates is about 0.36; the expert learns to pick the named one
    assert m["accuracy"] > 0.8 and m["accuracy"] > m["accuracy_zero_shot"], m
    from pizoo.tasks import task_data

    td = task_data(zoo, "mc")
    assert {len(c) for c in td.train.choices} == {2, 3, 4}  # kept in the task folder with the splits
    r = cli(zoo.root, "eval", "mc", "--json")  # reloaded: the same accuracy
    assert r.exit_code == 0 and json.loads(r.stdout)["accuracy"] == pytest.approx(m["accuracy"])
    # new data in another form of the gold (its text) is read with the task's own columns
    other = helpers.write_rows(mc_rows(40, 2, gold_as="text"), tmp_path / "mc-text.csv")
    r = cli(zoo.root, "eval", "mc", "--data", other, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["accuracy"] > 0.7, r.output


HEAD_KINDS = [("match", k) for k in sorted(KINDS)] + [("causal-lm", "lora"), ("seq2seq", "lora")]


@pytest.mark.parametrize("head,kind", HEAD_KINDS)
def test_fast_fisher_equals_the_batch1_oracle_when_examples_have_different_numbers_of_candidates(
        head, kind, bases, tmp_path):
    from pizoo.data import Examples

    zoo = helpers.new_zoo(tmp_path / "z", bases[head], kind, head)
    em = ExpertModel(zoo.spec, ("0", "1", "2", "3"), head_seed=0)
    probe = em.kind.probe({n: p.shape for n, p in em.expert.items()}, seed=0)
    with torch.no_grad():
        for n, t in probe.items():
            em.expert[n].copy_(t)
    rows = mc_rows(12, 3, gold_as="index")
    choices = [json.loads(r["options"]) for r in rows]
    ex = Examples([r["text"] for r in rows], None, [str(r["answer"]) for r in rows], None, choices)
    enc = em.encode(ex, [r["answer"] for r in rows])
    assert {len(r["candidates"]) for r in enc} == {2, 3, 4}
    fast = fisher_diag(em, enc, batch_size=5)
    slow = fisher_diag(em, enc, method="loop")
    for n in slow:
        assert slow[n].abs().sum() > 0, n
        rel = float((fast[n] - slow[n]).norm() / slow[n].norm())
        assert rel <= 1e-5, (n, rel)


def test_candidate_and_fixed_label_tasks_share_one_zoo_ranking_and_interpolation(bert_dir, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "z", bert_dir, head="match")
    helpers.train(zoo, "fixed", *helpers.task_files(tmp_path, "a", "match", n=80, n_eval=40), epochs=3)
    train = helpers.write_rows(mc_rows(60, 0), tmp_path / "mc.csv")
    r = cli(zoo.root, "add-task", "mc", "--data", train, "--choices", "options", "--label", "answer", "--epochs", 3,
            "--device", "cpu")
    assert r.exit_code == 0, r.output
    r = cli(zoo.root, "similar", "mc", "--json")  # the fixed-label task's expert is fitted to mc's candidates
    assert r.exit_code == 0, r.output
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["task"] == "fixed" and 0 <= row["fit_accuracy"] <= 1
    r = cli(zoo.root, "interpolate", "--target", "mc", "--with", "fixed", "--steps", 3, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"]["n_eval"] > 0
    r = cli(zoo.root, "interpolate", "--target", "fixed", "--with", "mc", "--steps", 3, "--device", "cpu",
            "--as", "fixed-mc", "--json")  # and the other way round
    assert r.exit_code == 0, r.output


def test_bad_candidate_data_is_one_line_and_writes_nothing(bert_dir, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "z", bert_dir, head="match")
    before = helpers.tree(zoo.root)
    good = mc_rows(30, 0)
    cases = {
        "out-of-range": ([{**good[0], "answer": "7"}] + good[1:], "out of range"),
        "one-candidate": ([{**good[0], "options": json.dumps(["w1"])}] + good[1:], "needs two or more"),
        "free-text": ([{**good[0], "options": "some words"}] + good[1:], "neither a list"),
    }
    for name, (rows, msg) in cases.items():
        f = helpers.write_rows(rows, tmp_path / f"{name}.csv")
        r = cli(zoo.root, "add-task", name, "--data", f, "--choices", "options", "--label", "answer", "--epochs", 1)
        assert r.exit_code == 1 and msg in r.stderr and "row 1" in r.stderr, (name, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    pickle = tmp_path / "refs(umd).p"
    pickle.write_bytes(b"\x80\x04K\x01.")
    r = cli(zoo.root, "add-task", "refs", "--data", pickle, "--choices", "options")
    assert r.exit_code == 1 and "never unpickle" in r.stderr, r.stderr
    f = helpers.write_rows(good, tmp_path / "mc.csv")  # --verbalizer renames a fixed label set: none here
    r = cli(zoo.root, "add-task", "v", "--data", f, "--choices", "options", "--label", "answer",
            "--verbalizer", "0=a,1=b")
    assert r.exit_code == 2 and "--choices" in r.stderr
    assert helpers.tree(zoo.root) == before


@pytest.mark.parametrize("head", ["causal-lm", "seq2seq"])
def test_text_to_text_heads_score_each_candidate_by_its_likelihood_after_the_input(head, bases, tmp_path):
    """A decoder (or encoder-decoder) scores a candidate as it scores a label text: the sum of its
    tokens' log-probabilities after the prompt; positions an example lacks are never chosen."""
    zoo = helpers.new_zoo(tmp_path / "z", bases[head], "lora", head)
    train = helpers.write_rows(mc_rows(60, 0), tmp_path / "mc.csv")
    r = cli(zoo.root, "add-task", "mc", "--data", train, "--choices", "options", "--label", "answer", "--epochs", 2,
            "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    from pizoo.tasks import load_task_model, task_data

    em, m = load_task_model(zoo, "mc")
    td = task_data(zoo, "mc", m)
    rows = em.encode(td.eval, td.label_ids(td.eval))
    scores = em.class_scores(rows)
    for row, sc in zip(rows, scores):
        n = len(row["candidates"])
        assert torch.isfinite(sc[:n]).all() and (sc[n:] == float("-inf")).all()
    one = em.collate([rows[0]], label=rows[0]["label"])  # the gold candidate's own tokens are scored
    with torch.no_grad():
        gold = float(em.log_probs(one)[0])
    assert gold == pytest.approx(float(scores[0, rows[0]["label"]]), abs=1e-4)


def test_a_per_task_head_refuses_candidates_in_one_line(bert_dir, tmp_path):
    zoo = helpers.new_zoo(tmp_path / "z", bert_dir, head="classification")
    f = helpers.write_rows(mc_rows(30, 0), tmp_path / "mc.csv")
    r = cli(zoo.root, "add-task", "mc", "--data", f, "--choices", "options", "--label", "answer", "--epochs", 1)
    assert r.exit_code == 2 and "own candidates" in r.stderr and "--head match" in r.stderr, r.stderr
