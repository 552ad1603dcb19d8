"""The main job: the whole π-Tuning workflow on the packaged MiniLM and real packaged data.

Runs the `pizoo` command a user would run, printing each command first:
  prepare the real tasks (zoo/recipes/*.toml) -> init (the shared label space: `match` head) ->
  add-task (few shots) for each -> similar -> graph -> cross-task eval -> interpolate -> landscape -> export ->
  import the export back -> summary.
Everything lands in demo-out/ (recreated on every run). Set DEMO_SHOTS / DEMO_EPOCHS to change
the regime; the defaults keep the run well under 15 minutes on 2 CPU cores."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prepare  # noqa: E402

OUT = Path("demo-out")
ZOO = OUT / "zoo"
SHOTS = os.environ.get("DEMO_SHOTS", "32")
EPOCHS = os.environ.get("DEMO_EPOCHS", "20")
LR = os.environ.get("DEMO_LR", "2e-3")
TARGET = "rt-sentiment"


def pizoo(*args: str, json_out: bool = False):
    cmd = [sys.executable, "-m", "pizoo", "--zoo", str(ZOO), *args]
    shown = "pizoo --zoo " + str(ZOO) + " " + " ".join(shlex.quote(a) for a in args)
    print(f"\n$ {shown}", flush=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE if json_out else None, text=True)
    if r.returncode != 0:
        sys.exit(f"demo: `{shown}` failed with exit code {r.returncode}")
    if json_out:
        return json.loads(r.stdout) if r.stdout.strip().startswith("{") and "\n{" not in r.stdout.strip() \
            else [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    return None


def main() -> None:
    start = time.perf_counter()
    shutil.rmtree(OUT, ignore_errors=True)
    files = prepare.main(str(OUT / "data"))
    tasks = [f.stem for f in files]
    pizoo("init", "--kind", "lora")
    trained = {}
    for f in files:
        trained[f.stem] = pizoo("add-task", f.stem, "--data", str(f), "--shots", SHOTS, "--epochs", EPOCHS,
                                "--lr", LR, "--max-length", "64", "--json", json_out=True)
    pizoo("list")
    pizoo("similar", TARGET, "--k", "2")
    # every task's top 2 sources, as interpolate ranks them (probe Fisher recalls, fit orders)
    sources = {t: pizoo("similar", t, "--k", "2", "--json", json_out=True) for t in tasks}
    graph = pizoo("graph", "--out", str(OUT / "graph.png"), "--csv", str(OUT / "graph.csv"), "--json",
                  json_out=True)
    pizoo("graph", "--out", str(OUT / "graph-normalized.png"), "--metric", "normalized")
    # one label space: every expert scores every task; here each sentiment expert on the target's split
    cross = {src: pizoo("eval", src, "--on", TARGET, "--json", json_out=True)
             for src in ("clothing-recommended", "clothing-rating") if src in tasks}
    pi = pizoo("interpolate", "--target", TARGET, "--epochs", EPOCHS, "--lr", LR, "--json",
               json_out=True)
    # the paper's Fig. 3c: loss and accuracy over the plane through the target and its two nearest tasks
    pizoo("landscape", "--target", TARGET, "--out", str(OUT / "plane.png"), "--resolution", "4", "--samples", "200")
    export_dir = OUT / "export" / f"{TARGET}-pi"
    pizoo("export", f"{TARGET}-pi", "--out", str(export_dir))
    labels = ",".join(trained[TARGET]["labels"])
    pizoo("add-task", f"{TARGET}-pi-reimported", "--from-adapter", str(export_dir), "--labels", labels)
    reimported = pizoo("eval", f"{TARGET}-pi-reimported", "--data", str(OUT / "data" / f"{TARGET}.csv"),
                       "--json", json_out=True)
    pizoo("verify")

    print("\n" + "=" * 78)
    print(f"Summary ({time.perf_counter() - start:.0f} s; {SHOTS} shots per class, MiniLM + LoRA r=8)")
    print("=" * 78)
    print(f"{'task':22} {'zero-shot':>9} {'expert':>7}   top-2 sources by `pizoo similar` (fit accuracy, probe "
          "Fisher cosine)")
    for name in graph["tasks"]:
        if name not in tasks:
            continue
        m_ = trained[name]["metrics"]
        print(f"{name:22} {m_['accuracy_zero_shot']:9.3f} {m_['accuracy']:7.3f}   "
              + ", ".join(f"{r['task']} ({r['fit_accuracy']:.2f}, {r['similarity']:.2f})" for r in sources[name]))
    for src, r in cross.items():
        print(f"\n{src}'s expert on {TARGET}'s held-out split (no {TARGET} data seen): {r['accuracy']:.3f}", end="")
    print()
    m = pi["metrics"]
    auto = pi["auto"]
    print(f"\nπ-Tuning on {TARGET}, --k auto: {auto['reason']} (cost {auto['cost_interpolations']} interpolations)")
    print(f"  target expert alone      {m['accuracy_target']:.3f}")
    if pi["sources"]:
        print(f"  with {', '.join(s['task'] for s in pi['sources'])}, softmax α = "
              f"{', '.join(f'{w:.3f}' for w in pi['alpha']['expert'])}")
        print(f"  uniform mixture (untuned) {m['accuracy_uniform_mixture']:.3f}")
        print(f"  interpolated             {m['accuracy_interpolated']:.3f}   on {m['n_eval']} held-out examples")
    print(f"  saved as {TARGET}-pi: the {pi['kept']} expert ({m['accuracy']:.3f}; --keep-best keeps the better)")
    print(f"  exported PEFT folder re-imported, accuracy on all of {TARGET}.csv: {reimported['accuracy']:.3f}")
    print(f"\nheatmap: {OUT / 'graph.png'} (normalized metric: {OUT / 'graph-normalized.png'})")
    print(f"plane:   {OUT / 'plane.png'} (loss and accuracy over the plane through {TARGET} and its two nearest tasks)")
    print(f"matrix:  {OUT / 'graph.csv'}")
    print(f"export:  {export_dir} (PEFT adapter + README.md model card + pizoo_provenance.json)")
    print(f"zoo:     {ZOO}")


if __name__ == "__main__":
    main()
