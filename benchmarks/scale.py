"""A zoo of 100 / 1,000 / 10,000 tasks: does it answer in under a second?

Builds each zoo cheaply (no training): one zoo.toml for a LoRA r=8 on a MiniLM-shaped model, and
per task a fisher.h5 of the real shapes (24 tensors, expert and probe groups, ~590 KB) drawn from
task families (tasks of a family share a Fisher pattern; each task multiplies it by its own
log-normal noise), a shared expert.safetensors (hard links), task.json, and the index. Then it
times the real commands as a user runs them (`python -m pizoo ...`, a fresh process each, warm page
cache, median of 3) with their peak memory, side by side at each size:

    similar NAME --k 5 | list | graph --around NAME --k 50 | verify (full re-hash)

and the top-k agreement of `similar` (sketch + exact rerank) with the exact ranking over every
task, for both metrics, over sampled targets.

    .venv/bin/python benchmarks/scale.py [--sizes 100,1000,10000] [--out /tmp/pizoo-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LAYERS, HIDDEN, R = 6, 384, 8


def shapes() -> dict[str, tuple[int, int]]:
    out = {}
    for layer in range(LAYERS):
        for module in ("query", "value"):
            stem = f"base_model.model.encoder.layer.{layer}.attention.self.{module}"
            out[f"{stem}.lora_A.weight"] = (R, HIDDEN)
            out[f"{stem}.lora_B.weight"] = (HIDDEN, R)
    return out


def build(root: Path, n: int, families: int, seed: int = 0) -> None:
    """A zoo of n tasks in `families` families, written as pizoo writes them."""
    sys.path.insert(0, str(ROOT))
    from safetensors.numpy import save_file

    from pizoo.config import SCHEMA_VERSION, TaskManifest, ZooSpec
    from pizoo.index import INDEX
    from pizoo.zoo import EXPERT, FISHER, MANIFEST, atomic_write, sha256_file

    rng = np.random.default_rng(seed)
    shp = shapes()
    spec = ZooSpec(base_model="/nonexistent/minilm", fingerprint="sha256:scale-benchmark", model_type="bert",
                   head="match", head_options={"pooling": "mean", "scale": 20.0}, kind="lora",
                   options={"r": R, "lora_alpha": 8, "target_modules": ["query", "value"], "lora_dropout": 0.0,
                            "use_dora": False, "use_rslora": False, "bias": "none"})
    root.mkdir(parents=True)
    (root / "zoo.toml").write_text(spec.to_toml())
    expert = root / ".shared-expert.safetensors"
    save_file({k: rng.standard_normal(s).astype(np.float32) * 0.01 for k, s in shp.items()}, str(expert))
    expert_sha = sha256_file(expert)
    attrs = {"n_samples": 128, "method": "per-example-empirical-fisher", "base_fingerprint": spec.fingerprint,
             "head": spec.head, "head_options": json.dumps(spec.head_options, sort_keys=True), "kind": spec.kind,
             "options": json.dumps(spec.options, sort_keys=True), "sample_seed": 0, "zoo_seed": 0}
    bases = [{k: rng.standard_normal(s).astype(np.float32) ** 2 for k, s in shp.items()} for _ in range(families)]
    for i in range(n):
        name = f"task-{i:05d}"
        d = root / name
        d.mkdir()
        fam = bases[i % families]
        with h5py.File(d / FISHER, "w") as f:
            for k, v in attrs.items():
                f.attrs[k] = v
            for group in ("expert", "probe"):
                g = f.create_group(group)
                for k, base in fam.items():
                    g.create_dataset(k, data=(base * rng.lognormal(0.0, 1.0, base.shape)).astype(np.float32))
        os.link(expert, d / EXPERT)
        files = {EXPERT: expert_sha, FISHER: sha256_file(d / FISHER)}
        m = TaskManifest(name=name, labels=("negative", "positive"), source={"family": i % families}, files=files,
                         metrics={"accuracy": 0.5}, provenance={"how": "train"}, schema_version=SCHEMA_VERSION)
        (d / MANIFEST).write_text(m.to_json())
    # one pass over the finished zoo, as `pizoo verify` rebuilds it
    from pizoo.zoo import Zoo

    zoo = Zoo(root)
    atomic_write(root / INDEX, zoo.build_index().covering(zoo.task_names()).write)
    expert.unlink()  # the tasks keep their hard links


def timed(cmd: list[str], repeat: int = 3) -> tuple[float, float, int]:
    """Median wall seconds and the peak RSS (MB) of a command; its exit code."""
    walls, peaks, code = [], [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        r = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        peaks.append(int(r.stderr.strip().splitlines()[-1]) / 1024)
        code = r.returncode
    return statistics.median(walls), max(peaks), code


def agreement(root: Path, targets: list[str], k: int) -> dict[str, float]:
    """Fraction of sampled targets whose top-k from `similar` (index) equals the exact top-k."""
    sys.path.insert(0, str(ROOT))
    from pizoo.embed import embedded_tasks, load_embedding, similar
    from pizoo.similarity import rank
    from pizoo.zoo import Zoo

    zoo = Zoo(root)
    everyone = embedded_tasks(zoo, "expert")
    out = {}
    for metric in ("cosine", "normalized"):
        same = 0
        for t in targets:
            exact = [n for n, _ in rank(load_embedding(zoo, t), {n: v for n, v in everyone.items() if n != t},
                                        metric)[:k]]
            fast = [r.task for r in similar(zoo, t, k=k, metric=metric)]
            same += exact == fast
        out[metric] = same / len(targets)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--out", default="/tmp/pizoo-scale")
    ap.add_argument("--family-size", type=int, default=10, help="tasks per family")
    ap.add_argument("--agreement-targets", type=int, default=20)
    ap.add_argument("--verify-max", type=int, default=10**9, help="time verify only up to this many tasks")
    ap.add_argument("--keep", action="store_true", help="keep the zoos; a later run with --keep reuses them")
    args = ap.parse_args()
    py = [sys.executable, "-m", "pizoo"]
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        root = Path(args.out) / f"zoo-{n}"
        start = time.perf_counter()
        if args.keep and (root / "zoo.toml").is_file() and (root / "index.h5").is_file():
            built = float("nan")  # reused from an earlier --keep run
        else:
            shutil.rmtree(root, ignore_errors=True)
            build(root, n, families=max(2, n // args.family_size))
            built = time.perf_counter() - start
        target = "task-00000"
        zoo = ["--zoo", str(root)]
        row = {"tasks": n, "build s": round(built, 1)}
        for label, cmd in (("similar --k 5", [*py, *zoo, "similar", target, "--k", "5", "--json"]),
                           ("list", [*py, *zoo, "list", "--json"]),
                           ("graph --around --k 50", [*py, *zoo, "graph", "--around", target, "--k", "50",
                                                      "--out", str(root.parent / f"g{n}.png")]),
                           ("verify", [*py, *zoo, "verify", "--json"])):
            if label == "verify" and n > args.verify_max:
                row[label] = "not run"
                continue
            wall, peak, code = timed(cmd, repeat=1 if label == "verify" else 3)
            row[label] = f"{wall:.2f} s, {peak:.0f} MB" + ("" if code == 0 else f" (exit {code})")
            print(f"  {n} tasks: {label}: {row[label]}", file=sys.stderr, flush=True)
        rng = np.random.default_rng(1)
        picks = [f"task-{i:05d}" for i in rng.choice(n, size=min(n, args.agreement_targets), replace=False)]
        agree = agreement(root, picks, k=5)
        row["top-5 = exact (cosine / normalized)"] = f"{agree['cosine']:.2f} / {agree['normalized']:.2f}"
        rows.append(row)
        print(f"  {n} tasks: {row}", file=sys.stderr, flush=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
