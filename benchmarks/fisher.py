"""Cost and exactness of the per-example Fisher pass.

On a MiniLM-shaped BERT (classification) and a SmolLM2-wide Llama (causal-lm) built in-process,
for each expert kind, at batch 32 on CPU, measured side by side in one run:
  fisher / fwd+bwd   the Fisher pass against one ordinary forward+backward over the same batches
  fisher / loop      against the batch-1 loop (one forward+backward per example)
  rel. error         ||fast - loop|| / ||loop|| over all expert tensors

    python benchmarks/fisher.py [--examples 64] [--batch-size 32] [--kinds lora,adapter,prompt,adalink]
"""

from __future__ import annotations

import argparse
import contextlib
import io

import torch
from _common import bert_like, helpers, llama_like, texts, timed, tmpdir


def run(base, head: str, kind: str, n: int, bs: int, repeat: int) -> dict:
    from pizoo.fisher import fisher_diag
    from pizoo.models import ExpertModel
    from pizoo.tasks import init_zoo

    zoo = init_zoo(tmpdir() / "zoo", base_model=str(base), kind=kind, head=head)
    labels = helpers.labels_for(head)
    em = ExpertModel(zoo.spec, labels, max_length=96, head_seed=0)
    probe = em.kind.probe({k: p.shape for k, p in em.expert.items()}, 0)
    with torch.no_grad():
        for k, t in probe.items():
            em.expert[k].copy_(t)
    rows = em.encode(helpers.ex(texts(n)), [i % 2 for i in range(n)])
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
    return {"fwd_bwd": min(base_t), "fisher": min(fast_t), "loop": loop_t, "rel_err": num / den}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kinds", default="lora,adapter,prompt,adalink")
    args = ap.parse_args()
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
