"""Examples/s of add-task's training loop against a minimal hand-written peft loop.

Same model (a MiniLM-shaped BERT built in-process), same LoRA, same batches, same number of steps,
measured side by side in one run, alternating the two to share any machine noise.

    python benchmarks/train_throughput.py [--steps 30] [--batch-size 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io

import torch
from _common import bert_like, helpers, texts, timed, tmpdir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from pizoo.models import ExpertModel
    from pizoo.tasks import init_zoo
    from pizoo.train import ExpertLoss, TrainConfig, fit

    base = bert_like(tmpdir() / "bert")
    zoo = init_zoo(tmpdir() / "zoo", base_model=str(base))
    n = args.steps * args.batch_size
    labels = [i % 2 for i in range(n)]
    em = ExpertModel(zoo.spec, ("0", "1"), max_length=64)
    rows = em.encode(helpers.ex(texts(n)), labels)
    batches = [em.collate(rows[i: i + args.batch_size]) for i in range(0, n, args.batch_size)]
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=1e-3, device="cpu", warmup_ratio=0.0)

    def pizoo_loop():
        model = ExpertModel(zoo.spec, ("0", "1"), max_length=64)
        with contextlib.redirect_stderr(io.StringIO()):
            fit(ExpertLoss(model), rows, model.collate, cfg)

    def hand_loop():
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=8))
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        for batch in batches:
            out = model(**{k: v for k, v in batch.items() if k != "labels"})
            loss = torch.nn.functional.cross_entropy(out.logits, batch["labels"])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    # both include building the model; the loop dominates. Warm up once each.
    pizoo_loop(), hand_loop()
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(timed(pizoo_loop))
        theirs.append(timed(hand_loop))
    o, t = min(ours), min(theirs)
    print(f"steps={args.steps} batch={args.batch_size} examples={n} threads={torch.get_num_threads()}")
    print(f"pizoo add-task loop : {n / o:8.1f} examples/s  (best of {args.rounds}: {o:.2f}s)")
    print(f"hand-written peft   : {n / t:8.1f} examples/s  (best of {args.rounds}: {t:.2f}s)")
    print(f"ratio pizoo / hand  : {t / o:.3f}")


if __name__ == "__main__":
    main()
