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


@pytest.mark.parametrize("name", COMMANDS)
def test_readme_shows_every_command(name):
    assert re.search(rf"pizoo (--zoo \S+ )?{re.escape(name)}\b", README), f"README never shows `pizoo {name}`"


def test_usage_errors_exit_2():
    assert runner.invoke(app, ["list", "--no-such-flag"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_python_dash_m_and_version():
    r = subprocess.run([sys.executable, "-m", "pizoo", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("pizoo ")
