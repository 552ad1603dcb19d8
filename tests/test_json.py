"""Every command's `--json` output keeps its keys: they are compared with the samples recorded in
tests/samples/json-keys.json, and each is documented in docs/JSON.md under its command.

Record anew (after a deliberate change of the schema): PIZOO_RECORD_JSON=1 pytest tests/test_json.py"""

import json
import os
import re
from pathlib import Path

import helpers
from typer.testing import CliRunner

from pizoo.cli import app

ROOT = Path(__file__).parent.parent
SAMPLES = Path(__file__).parent / "samples" / "json-keys.json"
DOC = ROOT / "docs" / "JSON.md"
NESTED = ("metrics",)  # records whose keys are part of the schema too (others are keyed by data: tasks, sites)


def keys(obj) -> dict:
    """The schema of one output: its top-level keys, and the keys of its NESTED records; a JSON-lines
    output: the union over its rows."""
    rows = obj if isinstance(obj, list) else [obj]
    out = {"keys": sorted({k for r in rows for k in r})}
    for field in NESTED:
        inner = {k for r in rows if isinstance(r.get(field), dict) for k in r[field]}
        if inner:
            out[field] = sorted(inner)
    return out


def parse(stdout: str):
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 and not stdout.startswith("[") else lines


def outputs(bert_dir, tmp_path) -> dict[str, dict]:
    runner = CliRunner()
    root = tmp_path / "zoo"

    def run(name, *args, jsonl=False):
        r = runner.invoke(app, ["--zoo", str(root), *map(str, args), "--json"])
        assert r.exit_code == 0, f"pizoo {' '.join(map(str, args))}\n{r.output}"
        got = parse(r.stdout)
        seen[name] = keys(got if not jsonl or isinstance(got, list) else [got])

    seen: dict[str, dict] = {}
    run("init", "init", "--base-model", bert_dir, "--head", "match")
    for name, rule, seed in (("alpha", "a", 0), ("beta", "a", 3), ("gamma", "b", 5)):
        train, held = helpers.task_files(tmp_path, rule, "match", n=64, seed=seed, n_eval=32)
        run("add-task", "add-task", name, "--data", train, "--eval-data", held, "--epochs", "2")
    run("list", "list", jsonl=True)
    run("show", "show", "alpha")
    run("verify", "verify")
    run("eval", "eval", "alpha", "--on", "beta")
    run("embed", "embed", "alpha", "--samples", "16", jsonl=True)
    run("similar", "similar", "alpha", "--k", "2", jsonl=True)
    run("graph", "graph", "--out", tmp_path / "g.png")
    run("interpolate", "interpolate", "--target", "alpha", "--k", "1", "--epochs", "1", "--device", "cpu")
    new, _ = helpers.task_files(tmp_path, "a", "match", n=32, seed=9, n_eval=8)
    run("interpolate --zero-shot", "interpolate", "--target", "new", "--data", new, "--zero-shot", "--k", "1")
    run("curve", "curve", "--target", "alpha", "--with", "beta", "--points", "3")
    run("landscape", "landscape", "--target", "alpha", "--with", "beta,gamma", "--resolution", "1",
        "--samples", "8", "--out", tmp_path / "plane.png")
    run("hyper train", "hyper", "train", "--tasks", "alpha,beta", "--epochs", "1")
    run("hyper show", "hyper", "show")
    run("export", "export", "alpha", "--out", tmp_path / "export")
    return seen


def test_json_keys_match_the_recorded_samples_and_the_docs(bert_dir, tmp_path):
    seen = outputs(bert_dir, tmp_path)
    if os.environ.get("PIZOO_RECORD_JSON"):
        SAMPLES.parent.mkdir(exist_ok=True)
        SAMPLES.write_text(json.dumps(seen, indent=1) + "\n")
    assert seen == json.loads(SAMPLES.read_text())
    doc = DOC.read_text()
    for command, schema in seen.items():
        section = re.search(rf"^## `pizoo {re.escape(command)}`\n(.*?)(?=^## |\Z)", doc, re.M | re.S)
        assert section, f"docs/JSON.md has no section for pizoo {command}"
        undocumented = [k for field in schema.values() for k in field if f"`{k}`" not in section[1]]
        assert not undocumented, f"pizoo {command} --json: {undocumented} not in docs/JSON.md"
