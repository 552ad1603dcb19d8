"""Cost of π-Tuning's mixture, and how fast it reaches the target expert's accuracy.

1. Step time of interpolate (k = 1, 2, 4 sources, mode full) against a plain single-expert training
   step, on a MiniLM-shaped BERT built in-process, same batches, interleaved, best of `--repeat`.
2. On the tiny synthetic tasks of the tests (a target with plenty of data, a related and an
   unrelated source): the fewest interpolation steps (from a doubling schedule) that reach the
   target expert's own accuracy, against the steps that expert was trained for.

    python benchmarks/interpolate.py [--steps 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io

import torch
from _common import bert_like, helpers, texts, timed, tmpdir


def step_times(steps: int, repeat: int) -> None:
    from pizoo.mixture import MixSpec, Mixture
    from pizoo.models import ExpertModel
    from pizoo.tasks import init_zoo
    from pizoo.train import ExpertLoss, TrainConfig, fit

    zoo = init_zoo(tmpdir() / "zoo", base_model=str(bert_like(tmpdir() / "bert")))
    bs = 16
    n = steps * bs
    cfg = TrainConfig(steps=steps, batch_size=bs, lr=1e-3, device="cpu")
    em = ExpertModel(zoo.spec, ("0", "1"), max_length=64, head_seed=0)
    rows = em.encode(helpers.ex(texts(n)), [i % 2 for i in range(n)])
    rand = [{k: torch.randn_like(p) * 0.02 for k, p in em.expert.items()} for _ in range(4)]

    def plain():
        with contextlib.redirect_stderr(io.StringIO()):
            fit(ExpertLoss(em), rows, em.collate, cfg)

    def mixture(k):
        def run():
            with contextlib.redirect_stderr(io.StringIO()):
                fit(Mixture(em, rand[:k], MixSpec()), rows, em.collate, cfg)
        return run

    plain(), mixture(2)()  # warm-up
    times = {"plain": [], 1: [], 2: [], 4: []}
    for _ in range(repeat):
        times["plain"].append(timed(plain))
        for k in (1, 2, 4):
            times[k].append(timed(mixture(k)))
    base = min(times["plain"])
    print(f"MiniLM-shaped BERT, LoRA r=8, batch {bs}, {steps} steps, best of {repeat}, "
          f"CPU threads {torch.get_num_threads()}")
    print(f"  single expert: {1000 * base / steps:7.1f} ms/step")
    for k in (1, 2, 4):
        t = min(times[k])
        print(f"  interpolate k={k}: {1000 * t / steps:7.1f} ms/step   ratio {t / base:.3f}")


def steps_to_match() -> None:
    from pizoo.interpolate import interpolate_task
    from pizoo.train import TrainConfig

    tmp = tmpdir()
    zoo = helpers.new_zoo(tmp / "zoo", helpers.tiny_bert(tmp / "tiny"))
    ft, et = helpers.task_files(tmp, "a", "classification", n=400, seed=0)
    fs, es = helpers.task_files(tmp, "a", "classification", n=400, seed=10)
    fb, eb = helpers.task_files(tmp, "b", "classification", n=400, seed=20)
    helpers.train(zoo, "src", fs, es, epochs=25)
    helpers.train(zoo, "other", fb, eb, epochs=25)
    target = helpers.train(zoo, "tgt", ft, et, epochs=25)
    want, trained = target.metrics["accuracy"], target.metrics["steps"]
    print(f"tiny BERT, synthetic: target expert {want:.3f} after {trained} steps")
    for mode in ("full", "alpha"):
        reached = None
        steps = 5
        while steps <= trained:
            cfg = TrainConfig(steps=steps, lr=5e-3, device="cpu")
            with contextlib.redirect_stderr(io.StringIO()):
                from pizoo.mixture import MixSpec

                m = interpolate_task(zoo, "tgt", cfg, k=2, spec=MixSpec(mode=mode), name=f"tgt-{mode}-{steps}",
                                     embed=False)
            acc = m.metrics["accuracy"]
            print(f"  mode {mode:5} {steps:4} steps: accuracy {acc:.3f} (uniform mixture before tuning "
                  f"{m.metrics['accuracy_uniform_mixture']:.3f})")
            if acc >= want:
                reached = steps
                break
            steps *= 2
        if reached:
            print(f"  -> mode {mode}: reaches the target's accuracy in {reached} steps = "
                  f"{reached / trained:.3f} of the {trained} it was trained for")
        else:
            print(f"  -> mode {mode}: did not reach {want:.3f} within {trained} steps")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    step_times(args.steps, args.repeat)
    steps_to_match()


if __name__ == "__main__":
    main()
