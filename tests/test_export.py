"""export: folders that plain peft/transformers load, giving pizoo's own outputs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
import torch
from typer.testing import CliRunner

from pizoo.cli import app
from pizoo.experts import KINDS, get_kind
from pizoo.heads import HEADS, get_head
from pizoo.interpolate import interpolate_task
from pizoo.tasks import load_task_model
from pizoo.train import TrainConfig

runner = CliRunner()
CASES = [(k, h) for k in sorted(KINDS) for h in sorted(HEADS)]


def cli(root, *args):
    return runner.invoke(app, ["--zoo", str(root), *map(str, args)])


@pytest.fixture(scope="module", params=CASES, ids=[f"{k}-{h}" for k, h in CASES])
def zoo2(request, tmp_path_factory, bases):
    """Two trained tasks and their interpolation, for one kind and head."""
    kind, head = request.param
    tmp = tmp_path_factory.mktemp(f"exp-{kind}-{head}")
    base = bases[head]
    zoo = helpers.new_zoo(tmp / "zoo", base, kind, head)
    for name, seed in (("t", 0), ("s", 1)):
        f, e = helpers.task_files(tmp, "a", head, n=60, seed=seed, n_eval=20)
        helpers.train(zoo, name, f, e, epochs=3, seed=seed, embed=False)
    interpolate_task(zoo, "t", TrainConfig(steps=5, lr=get_kind(kind).default_lr, device="cpu"), with_=["s"],
                     embed=False)
    return zoo, base, tmp


def _inputs():
    torch.manual_seed(0)
    ids = torch.randint(5, 70, (4, 9))  # words of every tiny vocabulary
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


def _plain_peft(base, folder, head, n_labels):
    from peft import PeftModel

    kwargs = {"num_labels": n_labels} if get_head(head).per_task else {}
    return PeftModel.from_pretrained(helpers.auto_model(head, base, **kwargs), folder).eval()


def _plain_merged(folder, head):
    return helpers.auto_model(head, folder).eval()


@pytest.mark.parametrize("task", ["t", "t-pi"])
@pytest.mark.parametrize("fmt", ["peft", "merged"])
def test_export_loads_in_plain_libraries_with_pizoo_outputs(zoo2, task, fmt):
    zoo, base, tmp = zoo2
    kind = get_kind(zoo.spec.kind)
    out = tmp / f"out-{task}-{fmt}"
    r = cli(zoo.root, "export", task, "--out", out, "--format", fmt, "--json")
    supported = kind.peft_type is not None if fmt == "peft" else kind.foldable
    if not supported:
        assert r.exit_code == 1 and not out.exists(), r.output
        assert ("peft has no adapter format" in r.stderr) if fmt == "peft" else ("cannot merge" in r.stderr)
        return
    assert r.exit_code == 0, r.output
    head = zoo.spec.head
    labels = list(zoo.manifest(task).labels)
    prov = json.loads((out / "pizoo_provenance.json").read_text())
    assert prov["labels"] == labels and prov["task"] == task and prov["format"] == fmt
    model = _plain_peft(base, out, head, len(labels)) if fmt == "peft" else _plain_merged(out, head)
    if fmt == "merged" and get_head(head).per_task:
        assert [model.config.id2label[i] for i in range(len(labels))] == labels
    em, _ = load_task_model(zoo, task)
    batch = _inputs()
    with torch.no_grad():
        ours = helpers.primary_output(lambda **kw: em.forward(kw), batch, head)
        theirs = helpers.primary_output(model, batch, head)
    assert ours.shape == theirs.shape
    diff = float((ours - theirs).abs().max())
    if fmt == "peft":
        assert diff == 0.0  # peft loads the very tensors pizoo computes with (measured: bit-exact)
    else:
        # Folding changes the order of float32 operations: 1e-5 absolute for O(1) logits, scaled for
        # larger ones (the tiny causal-lm's logits reach ~10; measured diffs there: up to 1.3e-5).
        assert diff <= 1e-5 * max(1.0, float(ours.abs().max())), diff
    card = (out / "README.md").read_text()
    assert zoo.spec.base_model in card and all(label in card for label in labels)
    if task == "t-pi":
        assert "| s |" in card and "softmax(α)" in card and "pizoo interpolate --target t --with s" in card
        assert prov["provenance"]["interpolation"]["sources"][0]["task"] == "s"


def test_interpolated_lora_exports_the_mixed_A_and_B(tmp_path, bert_dir):
    """Not peft's add_weighted_adapter (which scales A and B by sqrt(w)): the tensors themselves."""
    from safetensors.torch import load_file

    zoo = helpers.new_zoo(tmp_path / "zoo", bert_dir)
    for name, seed in (("t", 0), ("s", 1)):
        f, e = helpers.task_files(tmp_path, "a", "classification", n=40, seed=seed, n_eval=20)
        helpers.train(zoo, name, f, e, epochs=2, seed=seed, embed=False)
    interpolate_task(zoo, "t", TrainConfig(steps=3, device="cpu"), with_=["s"], embed=False)
    assert cli(zoo.root, "export", "t-pi", "--out", tmp_path / "o").exit_code == 0
    exported = load_file(tmp_path / "o" / "adapter_model.safetensors")
    stored = load_file(zoo.task_dir("t-pi") / "expert.safetensors")
    for k, v in stored.items():
        key = k if not k.startswith("head.") else "base_model.model.classifier." + k[len("head."):]
        assert torch.equal(exported[key], v), k


def test_refusals(tmp_path, bert_dir):
    zoo = helpers.new_zoo(tmp_path / "zoo", bert_dir)
    f, e = helpers.task_files(tmp_path, "a", "classification", n=40, n_eval=20)
    helpers.train(zoo, "t", f, e, epochs=1, embed=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    r = cli(zoo.root, "export", "t", "--out", busy)
    assert r.exit_code == 1 and "not empty" in r.stderr and "--force" in r.stderr
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    r = cli(zoo.root, "export", "t", "--out", busy, "--force")  # --force replaces only an earlier export
    assert r.exit_code == 1 and "not a pizoo export" in r.stderr and [p.name for p in busy.iterdir()] == ["keep.txt"]
    done = tmp_path / "done"
    assert cli(zoo.root, "export", "t", "--out", done).exit_code == 0
    r = cli(zoo.root, "export", "t", "--out", done, "--force")
    assert r.exit_code == 0 and (done / "adapter_config.json").exists()
    assert cli(zoo.root, "export", "t", "--out", tmp_path / "x", "--format", "onnx").exit_code == 2
    assert cli(zoo.root, "export", "ghost", "--out", tmp_path / "y").exit_code == 1
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folders left


def test_export_never_writes_into_or_over_the_zoo(tmp_path, bert_dir):
    """Regression: `export a --out ZOO --force` once deleted the whole zoo; `--out ZOO/b --force`
    replaced task b without the lock; `--out ZOO/new` wrote a foreign folder into it."""
    zoo = helpers.new_zoo(tmp_path / "zoo", bert_dir)
    f, e = helpers.task_files(tmp_path, "a", "classification", n=40, n_eval=20)
    helpers.train(zoo, "a", f, e, epochs=1, embed=False)
    helpers.train(zoo, "b", f, e, epochs=1, embed=False, seed=1)
    before = helpers.tree(zoo.root)
    for out in (zoo.root, zoo.root / "b", zoo.root / "new", tmp_path, zoo.root / "b" / "data"):
        for extra in ([], ["--force"]):
            r = cli(zoo.root, "export", "a", "--out", out, *extra)
            assert r.exit_code == 1 and "outside the zoo" in r.stderr, (out, extra, r.stderr)
    assert helpers.tree(zoo.root) == before and zoo.verify() == []


def test_readme_snippet_runs_without_pizoo(tmp_path, bert_dir):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    m = re.search(r"<!-- export-snippet -->\s*```python\n(.*?)```", readme, re.S)
    assert m, "README lacks the export snippet"
    zoo = helpers.new_zoo(tmp_path / "zoo", bert_dir, head=None)  # the default head: match
    assert zoo.spec.head == "match"
    f, e = helpers.task_files(tmp_path, "a", "classification", n=40, n_eval=20)
    helpers.train(zoo, "sst2", f, e, epochs=1, embed=False)
    out = tmp_path / "exported" / "sst2"
    assert cli(zoo.root, "export", "sst2", "--out", out).exit_code == 0
    code = "import sys; sys.modules['pizoo'] = None\n" + m.group(1)  # prove it needs no pizoo
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    from pizoo.tasks import load_task_model

    em, _ = load_task_model(zoo, "sst2")  # the same prediction as pizoo's
    ours = em.labels[int(em.predict(em.encode(helpers.ex(["a wonderful film"]), [0]))[0])]
    assert r.stdout.strip().splitlines()[-1] == ours
