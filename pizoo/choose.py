"""Which sources, and how many, for one target (`interpolate --k auto`), and which expert to keep.

The paper fixes k by hand and leaves open how many and which source tasks to mix. pizoo chooses
per target from what the zoo knows:

1. the ranking (pizoo.predict: the Fisher embeddings recall, each expert's fit to the target's
   training shots orders) proposes candidates, best first: the top AUTO_CANDIDATES distinct
   tasks, or the tasks of --with;
2. a probe per candidate (the requested interpolation with that one source, run for PROBE_SHARE
   of its steps) is scored on the target's eval split, data that neither the target's expert nor
   any probe was tuned on; a candidate is helpful when its probe is better (`compare`) than the
   target's own expert and than a control probe with no source (the target's expert trained for
   the same steps: a probe's extra steps alone must not pass for transfer);
3. the helpful ones are tried together as growing sets (two, three, ... sources), and a larger
   set wins only when it is better. No helpful candidate: k = 0, the better of the target's own
   expert and the control, and the reason is recorded.

`compare` pairs two experts on the same eval examples: accuracy decides when the difference of
their per-example outcomes is beyond NOISE_Z standard errors; otherwise the calibrated
log-likelihood (each expert's, after one temperature fitted for it on these examples) does. The
raw log-likelihood is not used: it rewards an own expert's overconfidence (on the choose-k records
the own expert's was the higher in 65 of the 84 pairs where the interpolation was the more
accurate). Choosing sources is a decision between options of symmetric cost, so the calibrated
log-likelihood's mean decides there (the best estimate; requiring it beyond noise as well was
measured: on 7 runs at 16 shots it kept k = 0 or 1 where k = 2 or 4 gained, 0.798 against 0.819).
Keeping a finalist other than the run's result (`keep`) is a choice among several experts on the
same few dozen examples, so there a finalist must win beyond noise on accuracy or on the
calibrated log-likelihood. Exact ties keep the ranking's order, the prior these decisions refine.

The cost is at most 2·C·PROBE_SHARE interpolations for C candidates (2.0 for C = 4; the control costs nothing
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
RULE = (f"paired: accuracy beyond {NOISE_Z:g} standard errors, else calibrated log-likelihood (keep-best: "
        f"beyond {NOISE_Z:g} standard errors)")


def _paired(x, y) -> float:
    """The paired difference of two per-example vectors in standard errors (0 when equal)."""
    d = x.double() - y.double()
    delta = float(d.mean())
    se = float(d.std()) / math.sqrt(d.numel()) if d.numel() > 1 else 0.0
    if delta == 0:
        return 0.0
    return math.copysign(math.inf, delta) if se == 0 else delta / se


def compare(a, b, strict: bool = True) -> int:
    """+1 when Score `a` is better than Score `b` (both on the same rows), -1 when worse, 0 for a tie:
    accuracy when its paired difference is beyond noise; else the calibrated log-likelihood, beyond
    noise when `strict`, by its mean otherwise (see the module text)."""
    if a.correct is None or b.correct is None:  # no per-example outcomes: point estimates
        ka = (a.accuracy, a.calibrated_log_likelihood if a.calibrated_log_likelihood is not None else a.log_likelihood)
        kb = (b.accuracy, b.calibrated_log_likelihood if b.calibrated_log_likelihood is not None else b.log_likelihood)
        return (ka > kb) - (ka < kb)
    z = _paired(a.correct, b.correct)
    if abs(z) > NOISE_Z:
        return 1 if z > 0 else -1
    if a.calibrated_each is not None and b.calibrated_each is not None:
        z = _paired(a.calibrated_each, b.calibrated_each)
        if abs(z) > NOISE_Z or (not strict and z != 0):
            return 1 if z > 0 else -1
    return 0


def better(a, b, strict: bool = False) -> bool:
    """Is Score `a` better than Score `b` (`compare`; by default the calibrated log-likelihood's mean
    decides what accuracy cannot: the choice of sources)?"""
    return compare(a, b, strict) > 0


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
        cal = self.score.calibrated_log_likelihood
        return {"sources": list(self.sources), "accuracy": self.accuracy,
                "log_likelihood": round(self.log_likelihood, 6),
                "calibrated_log_likelihood": None if cal is None else round(cal, 6), "steps": self.steps}


@dataclass(frozen=True)
class Choice:
    """The sources chosen (best first, possibly none) and why."""
    sources: tuple[str, ...]
    reason: str
    probes: tuple[Probe, ...] = ()
    candidates: tuple[str, ...] = ()
    control_wins: bool = False  # k = 0 and the control probe beat the own expert beyond noise

    def record(self, run_steps: int) -> dict:
        spent = sum(p.steps for p in self.probes)
        return {"k": len(self.sources), "reason": self.reason, "candidates": list(self.candidates),
                "probes": [p.record() for p in self.probes], "probe_steps": spent, "rule": RULE,
                "cost_interpolations": round(1 + spent / max(run_steps, 1), 3) if self.sources
                else round(spent / max(run_steps, 1), 3)}


def probe_steps(run_steps: int) -> int:
    return max(1, math.ceil(PROBE_SHARE * run_steps))


def choose(candidates: Sequence[str], own, probe: Callable[[Sequence[str]], Probe]) -> Choice:
    """Pick the sources among `candidates` (in the ranking's order, best first): `own` is the Score
    of the target's expert on the eval split, `probe(sources)` runs and scores a short interpolation.
    With no source chosen, `Choice.control` says whether the control probe beat the own expert."""
    if not candidates:
        return Choice((), "no other embedded task to mix with: kept the target's own expert (k = 0)")
    control = probe([])  # the target's expert alone, trained for a probe's steps (as long as every probe)
    control_wins = better(control.score, own)
    ref = control.score if control_wins else own
    singles = [probe([c]) for c in candidates]
    # beyond noise first; ties keep the ranking's order (sorted is stable)
    order = functools.cmp_to_key(lambda p, q: -compare(p.score, q.score, strict=False))
    helpful = sorted((p for p in singles if better(p.score, ref)), key=order)
    probes = [control, *singles]
    if not helpful:
        kept = "the control" if control_wins else "the target's own expert"
        what = " (the target's expert trained as long as a probe)" if control_wins else ""
        return Choice((), f"no candidate's probe scored above {kept} on the eval split beyond noise (accuracy "
                      f"{ref.accuracy:.3f}, calibrated log-likelihood {_cal(ref):.3f}): kept {kept}{what} (k = 0)",
                      tuple(probes), tuple(candidates), control_wins)
    best = helpful[0]
    names = [p.sources[0] for p in helpful]
    for n in range(2, len(names) + 1):
        p = probe(names[:n])
        probes.append(p)
        if better(p.score, best.score):
            best = p
    k = len(best.sources)
    return Choice(best.sources, f"{len(helpful)} of {len(candidates)} candidates helped alone; the best set of "
                  f"k = {k} scored accuracy {best.accuracy:.3f}, calibrated log-likelihood {_cal(best.score):.3f} on "
                  f"the eval split (target alone {own.accuracy:.3f}, {_cal(own):.3f})", tuple(probes), tuple(candidates))


def _cal(score) -> float:
    return score.calibrated_log_likelihood if score.calibrated_log_likelihood is not None else score.log_likelihood


@dataclass(frozen=True)
class Finalist:
    """An expert a run made (the target's own, the control, a probe's mixture, the untuned soup, the
    tuned interpolation), its tensors and its Score on the eval split."""
    what: str
    tensors: Any
    score: Any


def why_better(a, b) -> str:
    """What `compare` found Score `a` better than Score `b` on, in words (for the log)."""
    def cal(s) -> float:
        return s.calibrated_log_likelihood if s.calibrated_log_likelihood is not None else s.log_likelihood

    acc = f"accuracy {a.accuracy:.3f} against {b.accuracy:.3f}"
    if a.correct is None or b.correct is None:
        return f"{acc}, log-likelihood {cal(a):.3f} against {cal(b):.3f} (point estimates)"
    if abs(_paired(a.correct, b.correct)) > NOISE_Z:
        return f"{acc}, beyond noise"
    return (f"{acc} is within noise ({NOISE_Z:g} standard errors), so the calibrated log-likelihood decided: "
            f"{cal(a):.3f} against {cal(b):.3f} nats an example, beyond noise")


def keep(finalists: Sequence[Finalist], keep_best: bool = True) -> Finalist:
    """What interpolate saves: the run's result (the first finalist), unless another finalist beats it
    beyond noise (`compare`); then the best such. Without keep_best, the first, whatever it scored.

    A finalist must win beyond noise because the eval split is small and there are several of them:
    taking the best point estimate among four or five experts on a few dozen examples picks noise."""
    best = finalists[0]
    if not keep_best:
        return best
    for f in finalists[1:]:
        if better(f.score, best.score, strict=True):
            best = f
    return best
