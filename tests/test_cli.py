"""Every command documents itself with an example and appears in the README."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pizoo.cli import app

runner = CliRunner()
README = (Path(__file__).parent.parent / "README.md").read_text()
COMMANDS = [c.name for c in app.registered_commands]


def test_all_commands_are_registered():
    assert {"init", "add-task", "list", "show", "rm", "verify", "eval"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_an_example(name):
    r = runner.invoke(app, [name, "--help"])
    assert r.exit_code == 0
    assert "Example" in r.stdout and f"pizoo {name}" in r.stdout or "pizoo --zoo" in r.stdout


def _commands(group):
    for name, cmd in group.commands.items():
        yield from _commands(cmd) if hasattr(cmd, "commands") else [(name, cmd)]


def test_help_prose_wraps_to_the_terminal():
    """Rich markup mode keeps a docstring's line breaks; `command` joins each prose paragraph so rich
    wraps it to the terminal's width, and leaves the indented example lines alone."""
    import typer

    for name, cmd in _commands(typer.main.get_command(app)):
        for para in (cmd.help or "").strip().split("\n\n"):
            para = para.strip("\n")
            assert para.startswith(" ") or "\n" not in para, f"{name}: {para!r}"
    r = runner.invoke(app, ["interpolate", "--help"], terminal_width=300, env={"COLUMNS": "300"})
    assert r.exit_code == 0
    assert re.search(r"the original is kept\. It is compared on the target's eval split with every other expert", r.stdout)
    assert re.search(r"^ +pizoo interpolate --target refcocog --k 2 --json *$", r.stdout, re.M)
    r = runner.invoke(app, ["add-task", "--help"], terminal_width=300, env={"COLUMNS": "300"})
    example = re.search(r"^( *)Example:.*\n\s*?^( *)pizoo add-task sst2", r.stdout, re.M)
    assert example and len(example[2]) > len(example[1]), "examples are indented under Example:"


@pytest.mark.parametrize("name", COMMANDS)
def test_readme_shows_every_command(name):
    assert re.search(rf"pizoo (--zoo \S+ )?{re.escape(name)}\b", README), f"README never shows `pizoo {name}`"


def test_usage_errors_exit_2():
    assert runner.invoke(app, ["list", "--no-such-flag"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_python_dash_m_and_version():
    r = subprocess.run([sys.executable, "-m", "pizoo", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("pizoo ")


def test_every_kind_option_with_a_flag_is_an_init_flag():
    """A kind's options are one dataclass (pizoo/experts/*.py, `Options`); every field it gives a flag
    is a flag of `pizoo init`, and the flag's help is the dataclass's."""
    import dataclasses

    import typer.main

    from pizoo.experts import KINDS

    params = {opt: p.help for p in typer.main.get_command(app).commands["init"].params for opt in p.opts}
    for kind in KINDS.values():
        for f in dataclasses.fields(kind.Options):
            flag = f.metadata.get("flag")
            if flag:
                assert flag in params, (kind.name, flag)
                assert params[flag] == f.metadata["help"], (kind.name, flag)


def test_command_bodies_stay_thin():
    """The CLI parses, makes one library call and renders: no command body over 20 lines."""
    import ast

    import pizoo.cli

    tree = ast.parse(Path(pizoo.cli.__file__).read_text())
    for f in tree.body:
        if isinstance(f, ast.FunctionDef) and any(isinstance(d, ast.Call) and getattr(d.func, "id", "") == "command"
                                                  for d in f.decorator_list):
            body = f.body[1:] if isinstance(f.body[0], ast.Expr) else f.body  # past the docstring
            assert body[-1].end_lineno - body[0].lineno + 1 <= 20, f.name


def test_the_library_never_prints_nor_imports_rich():
    """Only the CLI and render draw; the library logs and reports progress through pizoo.progress."""
    root = Path(__file__).parent.parent / "pizoo"
    for path in root.rglob("*.py"):
        if path.name in ("cli.py", "render.py"):
            continue
        text = path.read_text()
        assert "import rich" not in text and "from rich" not in text and "pizoo.render" not in text, path
        assert not re.search(r"(?<![\w.])print\(", text), path


def test_no_branch_on_a_head_name_outside_the_heads():
    """A new head is one module plus one line: nothing else may test which head a zoo has."""
    root = Path(__file__).parent.parent / "pizoo"
    for path in root.rglob("*.py"):
        if path.parent.name != "heads":
            assert not re.search(r"head\s*[!=]=\s*[\"']", path.read_text()), path
