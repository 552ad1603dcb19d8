"""Which sources, and how many, for one target (`interpolate --k auto`).

The paper fixes k by hand and leaves open how many and which source tasks to mix. pizoo chooses
per target from what the zoo knows:

1. the similarity ranking proposes candidates (the top AUTO_CANDIDATES distinct tasks, or the
   tasks of --with);
2. a probe per candidate (the requested interpolation with that one source, run for PROBE_SHARE
   of its steps) is scored on the target's eval split, data that neither the target's expert nor
   any probe was tuned on; a candidate is helpful when its probe scores above the target's own
   expert (accuracy, then log-likelihood);
3. the helpful ones, best first, are tried together as growing sets (two, three, ... sources),
   and the best scoring set wins, the smaller on a tie. No helpful candidate: k = 0, the target's
   own expert, and the reason is recorded.

Similarity alone cannot tell a helpful neighbour from a harmful one (a task with the same inputs
and the opposite labels has a nearly identical Fisher embedding); the probes can. The cost is
at most (2·C − 1)·PROBE_SHARE interpolations for C candidates (1.75 for C = 4), besides the final
run; the record says what it was."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

AUTO_CANDIDATES = 4
PROBE_SHARE = 0.25


@dataclass(frozen=True)
class Probe:
    sources: tuple[str, ...]
    accuracy: float
    log_likelihood: float
    steps: int

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
                "probes": [p.record() for p in self.probes], "probe_steps": spent,
                "cost_interpolations": round(1 + spent / max(run_steps, 1), 3) if self.sources
                else round(spent / max(run_steps, 1), 3)}


def probe_steps(run_steps: int) -> int:
    return max(1, math.ceil(PROBE_SHARE * run_steps))


def choose(candidates: Sequence[str], own, probe: Callable[[Sequence[str]], Probe]) -> Choice:
    """Pick the sources among `candidates` (in similarity order): `own` is the Score of the target's
    expert on the eval split, `probe(sources)` runs and scores a short interpolation."""
    if not candidates:
        return Choice((), "no other embedded task to mix with: kept the target's own expert (k = 0)")
    beats = lambda p: (p.accuracy, p.log_likelihood) > (own.accuracy, own.log_likelihood)
    singles = [probe([c]) for c in candidates]
    helpful = sorted((p for p in singles if beats(p)), key=lambda p: (-p.accuracy, -p.log_likelihood))
    probes = list(singles)
    if not helpful:
        return Choice((), f"no candidate's probe scored above the target's own expert ({own.accuracy:.3f} on the "
                      "eval split): kept the target's own expert (k = 0)", tuple(probes), tuple(candidates))
    best = helpful[0]
    order = [p.sources[0] for p in helpful]
    for n in range(2, len(order) + 1):
        p = probe(order[:n])
        probes.append(p)
        if (p.accuracy, p.log_likelihood) > (best.accuracy, best.log_likelihood):
            best = p
    k = len(best.sources)
    return Choice(best.sources, f"{len(helpful)} of {len(candidates)} candidates helped alone; the best set of "
                  f"k = {k} scored {best.accuracy:.3f} on the eval split (target alone {own.accuracy:.3f})",
                  tuple(probes), tuple(candidates))
