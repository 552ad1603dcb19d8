"""Nothing breaks the zoo: regression tests for what an adversarial pass found (one per finding)."""

import json

import helpers
import pytest
from typer.testing import CliRunner

from pizoo.cli import app
from pizoo.errors import InvalidName
from pizoo.zoo import Zoo, check_name

runner = CliRunner()


def cli(root, *args):
    return runner.invoke(app, ["--zoo", str(root), *map(str, args)])


@pytest.fixture(scope="module")
def abc(tmp_path_factory, bert_dir):
    """A zoo with embedded tasks a, b, c (kept pristine: tests copy it)."""
    tmp = tmp_path_factory.mktemp("abc")
    zoo = helpers.new_zoo(tmp / "zoo", bert_dir, head=None)
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        f, e = helpers.task_files(tmp, "a", "classification", n=40, seed=seed, n_eval=20)
        helpers.train(zoo, name, f, e, epochs=1, seed=seed)
    return zoo.root, f


@pytest.fixture
def z(abc, tmp_path):
    import shutil

    shutil.copytree(abc[0], tmp_path / "z")
    return tmp_path / "z"


@pytest.mark.parametrize("name", ["recipes", "README.md", "zoo.toml", "readme.md", "_hyper", "index.h5"])
def test_reserved_names_are_refused(name, z, abc):
    with pytest.raises(InvalidName):
        check_name(name)
    before = helpers.tree(z)
    r = cli(z, "add-task", name, "--data", abc[1], "--epochs", "1")
    assert r.exit_code == 1 and "reserved" in r.stderr and "move or delete" not in r.stderr
    assert helpers.tree(z) == before


def test_verify_reports_hidden_symlinked_and_misnamed_entries(z, tmp_path):
    (z / ".evil").write_text("x")
    (z / "a" / "task.json").write_text((z / "a" / "task.json").read_text().replace('"name": "a"', '"name": "b"'))
    elsewhere = tmp_path / "elsewhere"
    (z / "c").rename(elsewhere)
    (z / "c").symlink_to(elsewhere, target_is_directory=True)
    r = cli(z, "verify", "--json")
    assert r.exit_code == 1
    found = {(p["task"], p["file"], p["issue"]) for p in json.loads(r.stdout)["problems"]}
    assert {("", ".evil", "foreign"), ("a", "task.json", "unreadable"), ("", "c", "symlink")} <= found
    assert Zoo(z).task_names() == ["a", "b"]  # a symlinked folder is not a task
    r = cli(z, "show", "a")
    assert r.exit_code == 1 and "names task 'b'" in r.stderr


@pytest.mark.parametrize("broken", ['{oops', '"files": ["x"]', '"labels": "neg"', "binary"])
def test_one_malformed_task_json_does_not_break_the_zoo(broken, z):
    path = z / "c" / "task.json"
    if broken == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage")
    elif broken == "{oops":
        path.write_text("{oops")
    else:
        d = json.loads(path.read_text())
        key, value = broken.split(": ")
        d[json.loads(key)] = json.loads(value)
        path.write_text(json.dumps(d))
    r = cli(z, "list", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["task"]: row for row in map(json.loads, r.stdout.splitlines())}
    assert rows["c"]["how"] == "unreadable" and rows["a"]["how"] == "train"
    r = cli(z, "similar", "a", "--json")
    assert r.exit_code == 0 and [json.loads(x)["task"] for x in r.stdout.splitlines()] == ["b"]
    assert "skipped" in r.stderr and "c (" in r.stderr
    r = cli(z, "show", "c")
    assert r.exit_code == 1 and "unexpected" not in r.stderr
    r = cli(z, "verify", "--json")
    assert ("c", "task.json", "unreadable") in {(p["task"], p["file"], p["issue"])
                                               for p in json.loads(r.stdout)["problems"]}


def test_a_files_entry_outside_the_task_folder_is_never_read(z):
    path = z / "a" / "task.json"
    d = json.loads(path.read_text())
    d["files"]["../b/expert.safetensors"] = d["files"]["expert.safetensors"]
    d["files"]["/etc/hostname"] = "0" * 64
    path.write_text(json.dumps(d))
    r = cli(z, "verify", "--json")
    found = {(p["task"], p["file"], p["issue"]) for p in json.loads(r.stdout)["problems"]}
    assert {("a", "../b/expert.safetensors", "outside"), ("a", "/etc/hostname", "outside")} <= found
    with pytest.raises(Exception, match="outside its folder"):
        Zoo(z).file("a", "../b/expert.safetensors")


def test_binary_zoo_toml_and_a_file_as_zoo(z, tmp_path):
    (z / "zoo.toml").write_bytes(b"\x00\xff\xfe binary")
    for args in (["list"], ["verify"], ["show", "a"]):
        r = cli(z, *args)
        assert r.exit_code == 1 and "not a text file" in r.stderr and "unexpected" not in r.stderr
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = cli(afile, "init")
    assert r.exit_code == 1 and "is a file" in r.stderr and afile.read_text() == "x"


@pytest.mark.parametrize("flags, message", [(["--max-length", "0"], "--max-length must be at least 4"),
                                            (["--max-length", "-5"], "--max-length must be at least 4"),
                                            (["--fisher-samples", "0"], "--fisher-samples must be at least 1")])
def test_bad_numbers_are_refused_before_any_training(flags, message, z, abc):
    before = helpers.tree(z)
    r = cli(z, "add-task", "new", "--data", abc[1], "--epochs", "50", *flags)
    assert r.exit_code == 2 and message in r.stderr and "training" not in r.stderr
    assert helpers.tree(z) == before


def test_remote_code_is_honoured_only_when_the_user_says_so(z):
    toml = z / "zoo.toml"
    toml.write_text(toml.read_text().replace("trust_remote_code = false", "trust_remote_code = true"))
    r = cli(z, "eval", "a")
    assert r.exit_code == 1 and "--trust-remote-code" in r.stderr
    r = runner.invoke(app, ["--zoo", str(z), "--trust-remote-code", "eval", "a", "--json"])
    assert r.exit_code == 0, r.output


def test_a_file_rewritten_with_its_hash_is_still_checked(z):
    """verify checks content, not only hashes: NaN tensors, an extra tensor, pickle bytes; and a
    NaN expert is refused by eval and export, not used."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from pizoo.zoo import sha256_file

    def rewrite(task, fname, write):
        path = z / task / fname
        write(path)
        manifest = json.loads((z / task / "task.json").read_text())
        manifest["files"][fname] = sha256_file(path)
        (z / task / "task.json").write_text(json.dumps(manifest))

    def nan(path):
        t = load_file(str(path))
        first = sorted(t)[0]
        t[first] = np.full_like(t[first], np.nan)
        save_file(t, str(path), metadata={"format": "pt"})

    def extra(path):
        t = load_file(str(path))
        t["base_model.model.encoder.extra.weight"] = np.zeros((2, 2), dtype=np.float32)
        save_file(t, str(path), metadata={"format": "pt"})

    rewrite("a", "expert.safetensors", nan)
    rewrite("b", "expert.safetensors", extra)
    rewrite("c", "fisher.h5", lambda p: p.write_bytes(b"\x80\x04\x95pickle bytes"))
    found = {(p["task"], p["file"], p["issue"]) for p in json.loads(cli(z, "verify", "--json").stdout)["problems"]}
    assert found == {("a", "expert.safetensors", "not finite"), ("b", "fisher.h5", "mismatch"),
                     ("b", "expert.safetensors", "wrong tensors"), ("c", "fisher.h5", "unreadable"),
                     ("", "index.h5", "stale (rebuilt)")}
    for args in (["eval", "a"], ["export", "a", "--out", z.parent / "out"]):
        r = cli(z, *args)
        assert r.exit_code == 1 and "NaN" in r.stderr, args
    assert not (z.parent / "out").exists()


def test_shots_larger_than_what_is_left_after_the_held_out_split_says_why(z, tmp_path):
    """16 rows per class and --shots 16: 20% is held out first; the message says so and how to avoid it."""
    f = helpers.write_rows(helpers.make_rows("a", 32, 7), tmp_path / "small.csv")
    r = cli(z, "add-task", "small", "--data", f, "--shots", "16")
    assert r.exit_code == 1 and "held out for evaluation" in r.stderr and "--eval-data" in r.stderr


def test_a_csv_row_with_extra_fields_is_named_not_misread(z, tmp_path):
    rows = "text,label\n" + "".join(f"w{i} w{i + 1},{'pos' if i % 2 else 'neg'}\n" for i in range(30))
    rows += "w1 w2,pos,surplus\n"
    f = tmp_path / "extra.csv"
    f.write_text(rows)
    before = helpers.tree(z)
    r = cli(z, "add-task", "x", "--data", f)
    assert r.exit_code == 1 and "line 32 has 3 fields, the header has 2" in r.stderr
    assert helpers.tree(z) == before


def test_verify_quick_checks_presence_and_the_index_without_rehashing(z):
    path = z / "a" / "expert.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only a re-hash sees it
    path.write_bytes(bytes(data))
    assert json.loads(cli(z, "verify", "--quick", "--json").stdout)["ok"]
    full = json.loads(cli(z, "verify", "--json").stdout)
    assert ("a", "expert.safetensors", "corrupt") in {(p["task"], p["file"], p["issue"]) for p in full["problems"]}
    (z / "b" / "fisher.h5").unlink()
    r = cli(z, "verify", "--quick", "--json")
    assert r.exit_code == 1
    assert ("b", "fisher.h5", "missing") in {(p["task"], p["file"], p["issue"]) for p in json.loads(r.stdout)["problems"]}


def test_verify_only_reports_when_it_cannot_take_the_lock(z):
    """A zoo verify cannot write (a read-only mount; here: a lock path it cannot create) is checked
    without the lock: problems and crash leftovers are reported, nothing is repaired or rebuilt."""
    (z / ".pizoo.lock").unlink(missing_ok=True)
    (z / ".pizoo.lock").mkdir()  # filelock cannot open it
    (z / ".tmp-half-0123abcd").mkdir()
    (z / "index.h5").unlink()
    before = helpers.tree(z)
    r = cli(z, "verify", "--json")
    assert r.exit_code == 1 and "unexpected" not in r.stderr, r.output
    found = {(p["task"], p["file"], p["issue"]) for p in json.loads(r.stdout)["problems"]}
    assert found == {("", ".tmp-half-0123abcd", "stale"), ("", "index.h5", "stale")}
    assert helpers.tree(z) == before and (z / ".tmp-half-0123abcd").is_dir()


# -- issue 27: no output flag writes into a zoo or over a user's file ----------------------------
ZOO_FILES = ("zoo.toml", "a/task.json", "b/expert.safetensors", "a/data/train.parquet", "index.h5", "a/fisher.h5")
OUTPUT_COMMANDS = (("graph", "--out"), ("graph", "--csv"), ("curve --target a --with b", "--out"),
                   ("landscape --target a --with b,c --resolution 1", "--out"))


@pytest.mark.parametrize("command,flag", OUTPUT_COMMANDS)
def test_no_output_flag_writes_into_the_zoo(z, command, flag):
    """Regression: `graph --out Z/zoo.toml` replaced the zoo's config with a PNG (exit 0); `curve --out
    Z/b/expert.safetensors`, `landscape --out Z/a/data/train.parquet` destroyed tasks."""
    before = helpers.tree(z)
    for inside in (*ZOO_FILES, "new.png", "a/new.png"):
        for force in ((), ("--force",)):
            r = cli(z, *command.split(), flag, z / inside, *force)
            assert r.exit_code == 2 and "inside a zoo" in r.stderr, (inside, r.stderr)
            assert helpers.tree(z) == before, inside


def test_an_output_file_pizoo_did_not_write_needs_force(z, tmp_path):
    mine = tmp_path / "thesis.png"
    mine.write_bytes(b"\x89PNG not pizoo's")
    notes = tmp_path / "notes.csv"
    notes.write_text("name,score\nx,1\n")
    r = cli(z, "graph", "--out", mine)
    assert r.exit_code == 2 and "not written by pizoo" in r.stderr and mine.read_bytes() == b"\x89PNG not pizoo's"
    r = cli(z, "graph", "--out", tmp_path / "g.png", "--csv", notes)
    assert r.exit_code == 2 and notes.read_text() == "name,score\nx,1\n" and not (tmp_path / "g.png").exists()
    # pizoo's own outputs are replaced on a rerun without --force; --force replaces anything
    assert cli(z, "graph", "--out", tmp_path / "g.png", "--csv", tmp_path / "g.csv").exit_code == 0
    assert cli(z, "graph", "--out", tmp_path / "g.png", "--csv", tmp_path / "g.csv").exit_code == 0
    assert cli(z, "graph", "--out", mine, "--force").exit_code == 0 and mine.read_bytes() != b"\x89PNG not pizoo's"
    r = cli(z, "graph", "--out", tmp_path)
    assert r.exit_code == 2 and "is a folder" in r.stderr
    assert cli(z, "graph", "--out", tmp_path / "new" / "deeper" / "g.png").exit_code == 0


def test_export_force_keeps_a_users_file_beside_an_earlier_export(z, tmp_path):
    """Regression: `export b --out DIR --force` deleted a user's own file in an earlier export's folder."""
    out = tmp_path / "exp"
    assert cli(z, "export", "a", "--out", out).exit_code == 0
    written = json.loads((out / "pizoo_provenance.json").read_text())["files"]
    assert sorted(p.name for p in out.iterdir()) == written
    (out / "my-notes.txt").write_text("mine")
    r = cli(z, "export", "b", "--out", out, "--force")
    assert r.exit_code == 1 and "my-notes.txt" in r.stderr and (out / "my-notes.txt").read_text() == "mine"
    (out / "my-notes.txt").unlink()
    assert cli(z, "export", "b", "--out", out, "--force").exit_code == 0
    assert json.loads((out / "pizoo_provenance.json").read_text())["task"] == "b"


def test_zero_and_nan_learning_rates_are_refused_not_taken_as_default(z, abc):
    """Regression: `--lr 0` trained at the kind's default (`lr or default`); `--alpha-lr nan` trained."""
    before = helpers.tree(z)
    for args in (("add-task", "new", "--data", abc[1], "--lr", "0"),
                 ("add-task", "new", "--data", abc[1], "--lr", "nan"),
                 ("interpolate", "--target", "a", "--k", "1", "--lr", "0"),
                 ("interpolate", "--target", "a", "--k", "1", "--alpha-lr", "nan")):
        r = cli(z, *args)
        assert r.exit_code == 2 and "must be a positive number" in r.stderr, (args, r.stderr)
    assert helpers.tree(z) == before


def test_every_file_of_a_task_has_the_mode_the_umask_gives(z, abc):
    """Regression: expert.safetensors was written 0600 (safetensors' private temporary file) while
    the rest was 0644, so the other users of a shared zoo could not read experts."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        assert cli(z, "add-task", "m", "--data", abc[1], "--epochs", "1").exit_code == 0
    finally:
        os.umask(old)
    modes = {p.relative_to(z / "m").as_posix(): stat.S_IMODE(p.stat().st_mode) for p in (z / "m").rglob("*") if p.is_file()}
    assert "expert.safetensors" in modes and set(modes.values()) == {0o644}, modes


def test_a_corrupt_candidate_is_skipped_not_fatal_for_an_unrelated_target(z):
    """Regression: one corrupt expert among the proposed sources aborted `interpolate --target a`."""
    (z / "b" / "expert.safetensors").write_bytes(b"garbage")
    r = cli(z, "interpolate", "--target", "a", "--k", "1", "--by", "fisher", "--steps", "1", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sources"][0]["task"] == "c" and "skipped sources" in r.stderr


@pytest.mark.parametrize("labels,why", [("no,no", "twice"), ("pos", "one label only")])
def test_import_refuses_duplicate_or_single_labels(tmp_path, bert_dir, labels, why):
    zoo = helpers.new_zoo(tmp_path / "zoo", bert_dir, head="match")
    adapter = helpers.peft_lora_adapter(bert_dir, tmp_path / "adapter", task_type="FEATURE_EXTRACTION")
    before = helpers.tree(zoo.root)
    r = cli(zoo.root, "add-task", "imp", "--from-adapter", adapter, "--labels", labels)
    assert r.exit_code == 1 and why in r.stderr and helpers.tree(zoo.root) == before


def test_verify_fails_when_zoo_toml_names_another_base_model(z, tmp_path, bert_dir):
    """Regression: verify said ok (exit 0) for a zoo.toml pointing at another model; every eval then
    failed on the fingerprint."""
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(bert_dir, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "hidden_dropout_prob": 0.3}))
    toml = (z / "zoo.toml").read_text()
    assert str(bert_dir) in toml
    (z / "zoo.toml").write_text(toml.replace(str(bert_dir), str(other)))
    r = cli(z, "verify", "--json")
    assert r.exit_code == 1, r.output
    problem = json.loads(r.stdout)["problems"][0]
    assert problem["file"] == "zoo.toml" and "not the one this zoo was made with" in problem["issue"]
    (z / "zoo.toml").write_text(toml)
    assert cli(z, "verify").exit_code == 0


def test_cells_are_read_as_written_not_as_missing_values(tmp_path):
    """Regression: labels `NA` vanished (a whole class), texts `null`/`None`/`nan` were dropped, a
    whitespace-only label became a class "", nested jsonl values were stored as Python reprs."""
    from pizoo.data import Columns, load_rows, read_examples
    from pizoo.errors import DataError

    rows = [("good film", "yes"), ("bad film", "no"), ("so so film", "NA"), ("null", "yes"), ("None", "no"),
            ("nan", "NA"), ("blank label", "  ")]
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    ex = read_examples(load_rows(f), Columns(), str(f))
    assert sorted(set(ex.labels)) == ["NA", "no", "yes"] and ex.labels.count("NA") == 2
    assert {"null", "None", "nan"} <= set(ex.texts) and len(ex) == 6  # the blank label's row is dropped
    j = tmp_path / "d.jsonl"
    j.write_text('{"text": "fine", "label": "a"}\n{"text": {"nested": 1}, "label": "b"}\n')
    with pytest.raises(DataError, match="row 2: column 'text' holds a dict"):
        read_examples(load_rows(j), Columns(), str(j))
    j.write_text('{"text": "fine", "label": "a"}\n{"text": "ok", "label": ["b", "c"]}\n')
    with pytest.raises(DataError, match="row 2: column 'label' holds a list"):
        read_examples(load_rows(j), Columns(), str(j))


def test_unreadable_data_is_one_line_that_names_the_problem(tmp_path):
    """Regression: a header-only csv, a broken jsonl, a folder as --data and a template with another
    field were refused with datasets' internals, "does not exist", or at the first label."""
    from pizoo.data import Columns, load_rows
    from pizoo.errors import DataError, UsageError

    (tmp_path / "h.csv").write_text("text,label\n")
    (tmp_path / "b.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "lab\n')
    (tmp_path / "l.jsonl").write_text('{"text": "a", "label": "x"}\n["not", "an", "object"]\n')
    for path, words in (("h.csv", r"a header \(text, label\) and no rows"), ("b.jsonl", "line 2 is not valid JSON"),
                        ("l.jsonl", "line 2 is not a JSON object"), (".", "is a folder, not a data file")):
        with pytest.raises(DataError, match=words):
            load_rows(tmp_path / path)
    with pytest.raises(UsageError, match="may name only"):
        Columns(label_template="{label} {other}")
    assert Columns(label_template="{{literal}} {label}").label_template  # escaped braces are fine


@pytest.mark.parametrize("args,words", [(("--alpha", "0"), "--alpha must be positive"),
                                        (("--dropout", "-0.5"), "--dropout must be in [0, 1)"),
                                        (("--dropout", "2"), "--dropout must be in [0, 1)"),
                                        (("--kind", "prompt", "--virtual-tokens", "126"), "leaves 2 of")])
def test_init_refuses_impossible_expert_options(tmp_path, bert_dir, args, words):
    """Regression: `init --alpha 0` (every expert a no-op), `--dropout 2`, and more virtual tokens
    than the model has positions (every later add-task failed) were stored."""
    r = runner.invoke(app, ["--zoo", str(tmp_path / "z"), "init", "--base-model", str(bert_dir), *args])
    assert r.exit_code == 2 and words in r.stderr, r.output
    assert not (tmp_path / "z" / "zoo.toml").exists()


def test_a_max_length_beyond_the_models_positions_is_cut_to_them(tmp_path, bert_dir, abc):
    from pizoo.models import ExpertModel

    zoo = helpers.new_zoo(tmp_path / "zoo", bert_dir, head="match")
    import json as _json

    positions = _json.loads((bert_dir / "config.json").read_text())["max_position_embeddings"]
    assert ExpertModel(zoo.spec, ("a", "b"), max_length=10 * positions).max_length == positions


@pytest.mark.parametrize("how,issue", [("huge", "out of range"), ("float16", "not float32 (float16)"),
                                       ("int64", "not float32 (int64)")])
def test_verify_refuses_expert_values_pizoo_never_writes(z, how, issue):
    """Regression: an expert of 1e30 values, or of float16 / int64 tensors, passed verify."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from pizoo.zoo import sha256_file

    path = z / "a" / "expert.safetensors"
    t = load_file(str(path))
    first = sorted(t)[0]
    t[first] = {"huge": np.full_like(t[first], 1e30), "float16": t[first].astype(np.float16),
                "int64": t[first].astype(np.int64)}[how]
    save_file(t, str(path), metadata={"format": "pt"})
    manifest = json.loads((z / "a" / "task.json").read_text())
    manifest["files"]["expert.safetensors"] = sha256_file(path)
    (z / "a" / "task.json").write_text(json.dumps(manifest))
    r = cli(z, "verify", "--json")
    assert r.exit_code == 1
    assert any(p["task"] == "a" and p["issue"].startswith(issue) for p in json.loads(r.stdout)["problems"]), r.stdout


def test_import_checks_the_adapters_base_model_and_refuses_per_module_ranks(tmp_path, bert_dir):
    """Regression: an adapter for another base model imported without a word when its shapes fit;
    alpha_pattern / rank_pattern were dropped (the expert then behaved unlike the adapter)."""
    import shutil

    zoo = helpers.new_zoo(tmp_path / "zoo", bert_dir, head="match")
    adapter = helpers.peft_lora_adapter(bert_dir, tmp_path / "adapter", task_type="FEATURE_EXTRACTION")
    config = json.loads((adapter / "adapter_config.json").read_text())
    other = tmp_path / "other-model"
    shutil.copytree(bert_dir, other)
    (other / "config.json").write_text(json.dumps({**json.loads((bert_dir / "config.json").read_text()),
                                                   "hidden_dropout_prob": 0.3}))
    before = helpers.tree(zoo.root)
    for change, words in (({"base_model_name_or_path": str(other)}, "not this zoo's base model"),
                          ({"rank_pattern": {"query": 4}}, "rank_pattern"),
                          ({"alpha_pattern": {"value": 32}}, "alpha_pattern")):
        (adapter / "adapter_config.json").write_text(json.dumps({**config, **change}))
        r = cli(zoo.root, "add-task", "imp", "--from-adapter", adapter, "--labels", "neg,pos")
        assert r.exit_code == 1 and words in r.stderr, (change, r.stderr)
        assert helpers.tree(zoo.root) == before
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "some/hub-model"}))
    r = cli(zoo.root, "add-task", "imp", "--from-adapter", adapter, "--labels", "neg,pos")
    assert r.exit_code == 0 and "cannot be checked" in r.stderr  # not verifiable here: imported, and said so


def test_labels_with_commas_or_equals_can_be_verbalized(tmp_path):
    """Regression: labels holding ',' or '=' could not be verbalized, and the hint offered could not work."""
    from pizoo.data import (
        Columns,
        escape_verbalizer,
        load_rows,
        parse_verbalizer,
        read_examples,
    )
    from pizoo.errors import DataError, UsageError

    f = tmp_path / "d.csv"
    f.write_text('text,label\ngood film,"a,b"\nbad film,x=y\nok film,plain\n')
    with pytest.raises(DataError) as e:
        read_examples(load_rows(f), Columns(verbalizer=parse_verbalizer("plain=fine")), str(f))
    hint = e.value.hint.split("add ", 1)[1].split(" to --verbalizer")[0]  # the hint's LABEL=WORD, as offered
    words = f"plain=fine,{hint.replace('WORD', 'first')},{escape_verbalizer('a,b' if 'x' in hint else 'x=y')}=second"
    ex = read_examples(load_rows(f), Columns(verbalizer=parse_verbalizer(words)), str(f))
    assert sorted(ex.labels) == ["fine", "first", "second"]
    (tmp_path / "v.json").write_text(json.dumps({"a,b": "comma", "x=y": "equals", "plain": "fine"}))
    ex = read_examples(load_rows(f), Columns(verbalizer=parse_verbalizer(f"@{tmp_path / 'v.json'}")), str(f))
    assert ex.labels == ["comma", "equals", "fine"]
    with pytest.raises(UsageError, match="JSON object"):
        (tmp_path / "bad.json").write_text("[1, 2]")
        parse_verbalizer(f"@{tmp_path / 'bad.json'}")


@pytest.mark.parametrize("columns", ["text", {"text": 5, "label": "label"}, {"label": "label", "verbalizer": [1]},
                                     {"text": "text", "label": "label", "extra": "x"}])
def test_a_malformed_columns_record_fails_verify_and_is_one_line_elsewhere(z, columns):
    """Regression: verify passed a task.json whose source.columns was malformed; eval then raised an
    unexpected TypeError."""

    path = z / "a" / "task.json"
    doc = json.loads(path.read_text())
    doc["source"]["columns"] = columns
    path.write_text(json.dumps(doc))
    r = cli(z, "verify", "--json")
    assert r.exit_code == 1 and {"task": "a", "file": "task.json", "issue": "unreadable"} in json.loads(r.stdout)["problems"]
    r = cli(z, "eval", "a")
    assert r.exit_code == 1 and "source.columns" in r.stderr and "unexpected" not in r.stderr, r.stderr


def test_a_processor_saved_by_todays_transformers_reads_images(tmp_path):
    """Regression: a VisionTextDualEncoderProcessor saved by transformers 5 writes processor_config.json
    and no preprocessor_config.json; init accepted the model and every image task was then refused
    with "has no image processor"."""
    import shutil

    from transformers import AutoProcessor

    dual = helpers.tiny_dual(tmp_path / "dual")
    resaved = tmp_path / "resaved"
    shutil.copytree(dual, resaved)
    for f in ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
              "special_tokens_map.json"):
        (resaved / f).unlink(missing_ok=True)
    AutoProcessor.from_pretrained(dual).save_pretrained(resaved)
    assert (resaved / "processor_config.json").is_file() and not (resaved / "preprocessor_config.json").exists()
    r = runner.invoke(app, ["--zoo", str(tmp_path / "z"), "init", "--base-model", str(resaved)])
    assert r.exit_code == 0, r.output
    data = helpers.image_task(tmp_path, next(iter(helpers.IMAGE_RULES)), 16, 0)
    r = cli(tmp_path / "z", "add-task", "img", "--data", data, "--image", "image", "--epochs", "1", "--json")
    assert r.exit_code == 0, r.output


def test_a_huge_or_folder_image_is_one_line(tmp_path):
    """Regression: a 400-megapixel PNG and a folder as an image path were not refused in one clear line."""
    import io
    import struct
    import zlib

    from PIL import Image

    from pizoo.errors import DataError
    from pizoo.inputs.image import read_image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    ihdr = png.index(b"IHDR")  # its header claims 20,000 x 20,000 pixels; the CRC made to match
    png[ihdr + 4: ihdr + 12] = struct.pack(">II", 20000, 20000)
    png[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(png[ihdr: ihdr + 17])))
    (tmp_path / "huge.png").write_bytes(bytes(png))
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(DataError, match="(400 megapixels|400000000 pixels).*decompression bomb"):
        read_image("huge.png", tmp_path, "row 1")
    with pytest.raises(DataError, match="is a folder, not an image file"):
        read_image("folder.png", tmp_path, "row 2")


def test_a_zoo_that_cannot_be_written_is_refused_before_training(z, abc):
    """Regression: writes to a read-only zoo failed only after the whole training run. The tests run
    as root, whom permissions do not stop: the zoo folder is made immutable (chattr +i) instead."""
    import subprocess

    subprocess.run(["chattr", "+i", str(z)], check=True)
    try:
        r = cli(z, "add-task", "new", "--data", abc[1], "--epochs", "1")
        assert r.exit_code == 1 and "cannot write to the zoo" in r.stderr, r.stderr
        assert "steps over" not in r.stderr  # refused before any training
        r = cli(z, "interpolate", "--target", "a", "--k", "1", "--steps", "1")
        assert r.exit_code == 1 and "cannot write to the zoo" in r.stderr
    finally:
        subprocess.run(["chattr", "-i", str(z)], check=True)
    assert not (z / "new").exists()
