import os
import sys
from pathlib import Path

# Nothing may reach a hub from the tests; datasets' cache stays out of the user's home.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import helpers  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests on the real packaged model")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or os.environ.get("PIZOO_SLOW") == "1":
        return
    deselected = [i for i in items if "slow" in i.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if "slow" not in i.keywords]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own zoo folder and datasets cache."""
    monkeypatch.setenv("PIZOO_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.delenv("PIZOO_DEBUG", raising=False)


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    return helpers.tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    return helpers.tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory):
    return helpers.tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def bases(bert_dir, llama_dir, t5_dir):
    """The tiny backbone of every head (helpers.HEAD_BASE)."""
    dirs = {"bert": bert_dir, "llama": llama_dir, "t5": t5_dir}
    return {head: dirs[b] for head, b in helpers.HEAD_BASE.items()}
