"""The multimodal demo: image tasks and text tasks in one zoo on pizoo's packaged multimodal base
model (pizoo:multimodal: DINOv2-small joined with MiniLM, built by `make setup`), one label space
and one parameter space.

Runs the `pizoo` commands a user would run, printing each first:
  prepare real image tasks (zoo/image-recipes/*.toml: MNIST, 8x8 digits, Fashion-MNIST when
  installed) and three text tasks -> init on pizoo:multimodal -> add-task each (16 shots) ->
  similar across modalities -> graph grouped by modality (the paper's Fig. 1) -> cross-task eval of
  an MNIST expert on the 8x8 digits -> interpolate for a low-shot image target -> summary.
Everything lands in demo-out/multimodal/ (recreated on every run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prepare  # noqa: E402

OUT = Path("demo-out") / "multimodal"
ZOO = OUT / "zoo"
SHOTS = os.environ.get("DEMO_SHOTS", "16")
IMAGE_EPOCHS = os.environ.get("DEMO_IMAGE_EPOCHS", "8")
TEXT_EPOCHS = os.environ.get("DEMO_EPOCHS", "10")
TEXT_TASKS = ("rt-sentiment", "clothing-recommended", "bbc-topic")
TARGET, TARGET_SHOTS = "digits-8x8", os.environ.get("DEMO_TARGET_SHOTS", "4")


def pizoo(*args: str, json_out: bool = False):
    cmd = [sys.executable, "-m", "pizoo", "--zoo", str(ZOO), *args]
    shown = f"pizoo --zoo {ZOO} " + " ".join(args)
    print(f"\n$ {shown}", flush=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE if json_out else None, text=True)
    if r.returncode != 0:
        sys.exit(f"demo: `{shown}` failed with exit code {r.returncode}")
    if not json_out:
        return None
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    return json.loads(r.stdout) if len(lines) == 1 or r.stdout.lstrip().startswith("{\n") else \
        [json.loads(line) for line in lines]


def main() -> None:
    start = time.perf_counter()
    shutil.rmtree(OUT, ignore_errors=True)
    data = OUT / "data"
    images = prepare.main_images(str(data))
    texts = [prepare.prepare(prepare.RECIPES / f"{t}.toml", data) for t in TEXT_TASKS]
    pizoo("init", "--base-model", "pizoo:multimodal", "--kind", "lora")
    trained = {}
    for f in images:
        shots = TARGET_SHOTS if f.stem == TARGET else SHOTS
        trained[f.stem] = pizoo("add-task", f.stem, "--data", str(f), "--image", "image", "--shots", shots,
                                "--epochs", IMAGE_EPOCHS, "--json", json_out=True)
    for f in texts:
        trained[f.stem] = pizoo("add-task", f.stem, "--data", str(f), "--shots", SHOTS, "--epochs", TEXT_EPOCHS,
                                "--max-length", "64", "--json", json_out=True)
    pizoo("list")
    near = pizoo("similar", TARGET, "--k", "3", "--json", json_out=True)
    graph = pizoo("graph", "--group", "modality", "--out", str(OUT / "graph.png"), "--csv", str(OUT / "graph.csv"),
                  "--json", json_out=True)
    cross = pizoo("eval", "mnist-digit", "--on", TARGET, "--json", json_out=True)
    pi = pizoo("interpolate", "--target", TARGET, "--json", json_out=True)
    summary = {
        "seconds": round(time.perf_counter() - start, 1),
        "tasks": {n: {"accuracy": round(t["metrics"]["accuracy"], 3),
                      "zero_shot": round(t["metrics"]["accuracy_zero_shot"], 3), "n_train": t["metrics"]["n_train"]}
                  for n, t in trained.items()},
        "similar_to_target": near, "graph_order": graph["order"],
        "mnist-digit expert on digits-8x8 (no digits-8x8 data)": round(cross["accuracy"], 3),
        "interpolate": {k: pi.get(k) for k in ("kept", "metrics", "sources", "alpha", "auto")},
    }
    summary["referring expressions"] = ref_family(data)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n" + json.dumps(summary, indent=2))


REF_TARGET, REF_SIBLING = "ref-g", "ref-plus"


def ref_family(data: Path) -> dict:
    """The paper's own family, on scenes of real digits: referring expressions whose candidates are
    the objects' boxes (ref, ref-plus, ref-g as RefCOCO, RefCOCO+, RefCOCOg), a visual question
    answered from candidate answers (scene-qa), and ref on Fashion-MNIST articles where installed.
    The user's workflow on it: similar, interpolate, curve, landscape, cross-task eval, export."""
    scenes = prepare.main_scenes(str(data))
    trained = {name: pizoo("add-task", name, "--data", str(path), *flags, "--shots", SHOTS, "--epochs", IMAGE_EPOCHS,
                           "--json", json_out=True)
               for name, (path, flags) in scenes.items()}
    near = pizoo("similar", REF_TARGET, "--k", "2", "--json", json_out=True)
    pi = pizoo("interpolate", "--target", REF_TARGET, "--json", json_out=True)
    curve = pizoo("curve", "--target", REF_TARGET, "--with", REF_SIBLING, "--points", "6",
                  "--out", str(OUT / "ref-curve.png"), "--json", json_out=True)
    plane = pizoo("landscape", "--target", REF_TARGET, "--with", f"{REF_SIBLING},ref", "--resolution", "2",
                  "--samples", "48", "--out", str(OUT / "ref-plane.png"), "--json", json_out=True)
    cross = {f"{a} expert on {b}": round(pizoo("eval", a, "--on", b, "--json", json_out=True)["accuracy_iou50"], 3)
             for a, b in (("ref", REF_TARGET), (REF_SIBLING, REF_TARGET), (REF_TARGET, "ref"))}
    pizoo("export", REF_TARGET, "--out", str(OUT / f"{REF_TARGET}-peft"), "--format", "peft")
    return {
        "tasks": {n: {"accuracy": round(t["metrics"]["accuracy"], 3),
                      "zero_shot": round(t["metrics"]["accuracy_zero_shot"], 3), "n_train": t["metrics"]["n_train"]}
                  for n, t in trained.items()},
        f"similar {REF_TARGET} --k 2": [(r["task"], round(r.get("similarity", float("nan")), 3)) for r in near],
        "interpolate": {k: pi.get(k) for k in ("kept", "metrics", "sources", "alpha")},
        f"curve {REF_TARGET} -> {REF_SIBLING} (t, accuracy)": [(p["t"], round(p["accuracy"], 3)) for p in curve["points"]],
        "landscape points (accuracy)": {p["name"]: round(p["accuracy"], 3) for p in plane["points"]},
        "cross-task eval (accuracy at IoU 0.5)": cross,
    }


if __name__ == "__main__":
    main()
