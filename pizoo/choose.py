"""Which sources, and how many, for one target (`interpolate --k auto`).

The paper fixes k by hand and leaves open how many and which source tasks to mix. pizoo chooses
per target from what the zoo knows:

1. the similarity ranking proposes candidates (the top AUTO_CANDIDATES distinct tasks, or the
   tasks of --with);
2. a probe per candidate (the requested interpolation with that one source, run for PROBE_SHARE
   of its steps) is scored on the target's eval split, data that neither the target's expert nor
   any probe was tuned on; a candidate is helpful when its probe is better, by the paired rule of
   `better`, than the target's own expert, and than a control probe with no source (the target's
   expert trained for the same steps: a probe's extra steps alone must not pass for transfer);
3. the helpful ones, best first, are tried together as growing sets (two, three, ... sources),
   and the best set wins, the smaller unless a larger one is better. No helpful candidate: k = 0,
   the target's own expert, and the reason is recorded.

`better` compares two experts on the same eval examples, pairing them: accuracy decides when the
difference of their per-example outcomes is beyond noise (more than NOISE_Z standard errors of the
paired difference), and otherwise the mean log-likelihood of the gold label does. An eval split of
a few dozen examples moves accuracy in steps of one example, so accuracy first would let one
example's flip pick the sources; the log-likelihood is a proper score that every example moves a
little, and it decides the near-ties.

Similarity alone cannot tell a helpful neighbour from a harmful one (a task with the same inputs
and the opposite labels has a nearly identical Fisher embedding); the probes can. The cost is
at most 2·C·PROBE_SHARE interpolations for C candidates (2.0 for C = 4; the control costs nothing
in mode alpha, where it is the own expert), besides the final run; the record says what it was."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

AUTO_CANDIDATES = 4
PROBE_SHARE = 0.25
NOISE_Z = 2.0
RULE = f"paired: accuracy beyond {NOISE_Z:g} standard errors, else log-likelihood"


def better(a, b) -> bool:
    """Is Score `a` better than Score `b`, both on the same rows? Accuracy when the paired difference
    of their per-example outcomes is beyond NOISE_Z standard errors, else the mean log-likelihood."""
    if a.correct is None or b.correct is None:  # no per-example outcomes: accuracy, then log-likelihood
        return (a.accuracy, a.log_likelihood) > (b.accuracy, b.log_likelihood)
    d = a.correct.double() - b.correct.double()
    delta = float(d.mean())
    se = float(d.std()) / math.sqrt(d.numel()) if d.numel() > 1 else 0.0
    if delta != 0 and abs(delta) > NOISE_Z * se:
        return delta > 0
    return a.log_likelihood > b.log_likelihood


@dataclass(frozen=True)
class Probe:
    sources: tuple[str, ...]
    score: Any  # pizoo.models.Score on the eval split
    steps: int

    @property
    def accuracy(self) -> float:
        return self.score.accuracy

    @property
    def log_likelihood(self) -> float:
        return self.score.log_likelihood

    def record(self) -> dict:
        return {"sources": list(self.sources), "accuracy": self.accuracy,
                "log_likelihood": round(self.log_likelihood, 6), "steps": self.steps}


@dataclass(frozen=True)
class Choice:
    """The sources chosen (best first, possibly none) and why."""
    sources: tuple[str, ...]
    reason: str
    probes: tuple[Probe, ...] = ()
    candidates: tuple[str, ...] = ()

    def record(self, run_steps: int) -> dict:
        spent = sum(p.steps for p in self.probes)
        return {"k": len(self.sources), "reason": self.reason, "candidates": list(self.candidates),
                "probes": [p.record() for p in self.probes], "probe_steps": spent, "rule": RULE,
                "cost_interpolations": round(1 + spent / max(run_steps, 1), 3) if self.sources
                else round(spent / max(run_steps, 1), 3)}


def probe_steps(run_steps: int) -> int:
    return max(1, math.ceil(PROBE_SHARE * run_steps))


def choose(candidates: Sequence[str], own, probe: Callable[[Sequence[str]], Probe]) -> Choice:
    """Pick the sources among `candidates` (in similarity order): `own` is the Score of the target's
    expert on the eval split, `probe(sources)` runs and scores a short interpolation."""
    if not candidates:
        return Choice((), "no other embedded task to mix with: kept the target's own expert (k = 0)")
    control = probe([])  # the target's expert alone, trained for a probe's steps (as long as every probe)
    ref = control.score if better(control.score, own) else own
    singles = [probe([c]) for c in candidates]
    order = functools.cmp_to_key(lambda p, q: -1 if better(p.score, q.score) else 1 if better(q.score, p.score) else 0)
    helpful = sorted((p for p in singles if better(p.score, ref)), key=order)
    probes = [control, *singles]
    if not helpful:
        return Choice((), f"no candidate's probe scored above the target's own expert on the eval split (alone: "
                      f"accuracy {ref.accuracy:.3f}, log-likelihood {ref.log_likelihood:.3f}, trained as long as a "
                      "probe where that is better): kept the target's own expert (k = 0)", tuple(probes),
                      tuple(candidates))
    best = helpful[0]
    names = [p.sources[0] for p in helpful]
    for n in range(2, len(names) + 1):
        p = probe(names[:n])
        probes.append(p)
        if better(p.score, best.score):
            best = p
    k = len(best.sources)
    return Choice(best.sources, f"{len(helpful)} of {len(candidates)} candidates helped alone; the best set of "
                  f"k = {k} scored accuracy {best.accuracy:.3f}, log-likelihood {best.log_likelihood:.3f} on the eval "
                  f"split (target alone {own.accuracy:.3f}, {own.log_likelihood:.3f})", tuple(probes), tuple(candidates))
