"""π-Tuning on the zoo: choose the sources of a target, learn the softmax(α) mixture of their experts
on the target's data (pizoo.mixture), and save the result as a task; the linear path between two
experts (the paper's Fig. 3a)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pizoo import progress
from pizoo.choose import AUTO_CANDIDATES, Finalist, Probe, choose, keep, probe_steps, why_better
from pizoo.config import TaskManifest
from pizoo.embed import check_k, load_embedding
from pizoo.errors import IncompatibleExperts, PizooError, TaskNotFound, UsageError
from pizoo.fisher import embedding_writer
from pizoo.mixture import MixSpec, Mixture, lerp
from pizoo.predict import Candidate, candidate, check_by, default_by, fit_candidates, rank_sources, root_of
from pizoo.progress import log
from pizoo.similarity import PAIRWISE, similarity
from pizoo.train import device_for, fit, planned_steps
from pizoo.zoo import TaskFiles

if TYPE_CHECKING:  # annotations only: the model layer would add transformers and peft here
    from pizoo.models import ExpertModel


def choose_sources(zoo, target: str, *, with_: Sequence[str] | None = None, k: int | None = 2,
                   metric: str = "cosine", by: str = "fisher", em: ExpertModel | None = None, rows=None) -> list[Candidate]:
    """The tasks to mix with `target`: the explicit list, or its top-k (k None: all of them, best
    first) through the one ranking path of pizoo.predict (`by` fisher, fit or both; fit needs the
    target's model `em` and its encoded training `rows`).

    Sources are distinct tasks: a task made by interpolation counts as the task it was made for
    (its root), so neither the target's own derivatives nor a second version of one source are
    offered."""
    zoo.manifest(target)
    if with_:
        if target in with_:
            raise UsageError(f"--with names the target {target!r} itself; it is always part of the mixture")
        if len(set(with_)) != len(with_):
            raise UsageError(f"--with names a task twice: {','.join(with_)}")
        for name in with_:
            if not zoo.has_task(name):
                raise TaskNotFound(f"--with names {name!r}, which is not in {zoo.root}", "pizoo list")
        try:  # similarities are informative here, not required
            tv = load_embedding(zoo, target, "probe")
            sims = {n: similarity(tv, load_embedding(zoo, n, "probe"), metric if metric in PAIRWISE else "cosine")
                    for n in with_}
        except Exception:
            sims = {}
        fits, base = ({}, None)
        if by != "fisher" and em is not None and rows:
            fits, _, _, base = fit_candidates(zoo, em, rows, list(with_))
        return [candidate(n, sims.get(n), fits.get(n), base, len(rows or ())) for n in with_]
    ranking = rank_sources(zoo, target, by=by, metric=metric, em=em, rows=rows, count=k)
    ranked = list(ranking.candidates)
    if k is None:
        return ranked
    check_k(k, len(ranked))
    return ranked[:k]


def parse_k(k: int | str) -> int | None:
    """--k: a count of sources, or "auto" (None): pizoo.choose picks how many and which."""
    if isinstance(k, str):
        if k.strip().lower() == "auto":
            return None
        try:
            k = int(k)
        except ValueError:
            raise UsageError(f"--k must be a number of sources or 'auto', got {k!r}") from None
    if k < 1:
        raise UsageError(f"--k must be at least 1 (or 'auto'), got {k}")
    return k


def load_expert_part(zoo, name: str, em: ExpertModel) -> dict[str, torch.Tensor]:
    """A task's expert tensors (no head), checked against the zoo's expert shape."""
    from pizoo.models import load_tensors, split_head

    expert, _ = split_head(load_tensors(zoo.expert_file(name)))
    if set(expert) != set(em.expert) or any(expert[n].shape != em.expert[n].shape for n in expert):
        raise IncompatibleExperts(f"the expert of task {name!r} does not have this zoo's expert shape "
                                  f"({zoo.spec.kind} on {zoo.spec.base_model})", f"pizoo rm {name} --yes")
    return expert


@dataclass
class _Run:
    """What one interpolation works on: the target's model and splits, its own expert and score."""
    target: str
    em: object  # the target's ExpertModel
    data: object  # its TaskData
    train_rows: list
    eval_rows: list
    own_state: dict
    own: object  # the own expert's Score on the eval split
    run_steps: int
    cfg: object
    spec: MixSpec
    alpha_lr: float


def interpolate_task(zoo, target: str, cfg, *, with_: Sequence[str] | None = None, k: int | str | None = None,
                     metric: str = "cosine", spec: MixSpec = MixSpec(), shots: int | None = None,
                     alpha_lr: float = 0.05, name: str | None = None, embed: bool = True, keep_best: bool = True,
                     by: str | None = None, alpha_on: str = "held-out"):
    """Learn the softmax(α) mixture of `target` and its sources on the target's data; save it as a task.

    k "auto" (the default without `with_`; with it, all of `with_`): pizoo.choose picks how many
    and which sources (k = 0 keeps the target's expert); a number: the top-k by similarity.
    keep_best: the result is compared with the target's own expert on the target's eval split
    (data neither was tuned on) and the better of the two is saved; the record says which.

    alpha_on (mode alpha only): "held-out" fits α two-fold on the eval split, which the target's expert
    has not fitted; "train" fits it on the training split (measured: α drifts to the target there)."""
    from pizoo.tasks import refuse_existing

    n_sources = parse_k(k if k is not None else len(with_) if with_ else "auto")
    _check_options(alpha_lr, alpha_on, by)
    out_name = name or f"{target}-pi"
    refuse_existing(zoo, out_name)
    run = _start(zoo, target, cfg, spec, shots, alpha_lr)
    by = by or default_by(zoo, has_data=True)
    ranked, sources, experts = _proposed(zoo, run, with_, n_sources, metric, by)
    choice, probe_states = (None, {}) if n_sources is not None else _auto(run, sources, experts)
    if choice is not None:
        sources = [next(c for c in sources if c.task == s) for s in choice.sources]
        log.info(f"--k auto for {target}: {choice.reason}")
    candidates = [c.task for c in ranked[:None if n_sources is not None else AUTO_CANDIDATES]]
    record, metrics = _records(zoo, run, target, sources, candidates,
                               dict(mode=spec.mode, granularity=spec.granularity, init=spec.init, metric=metric,
                                    by=by, alpha_lr=alpha_lr))
    mixed, finalists = _mix(run, choice, probe_states, sources, experts, alpha_on, record, metrics)
    if finalists is None:
        return None  # a non-main process of a distributed launch
    chosen = _keep(run, choice, finalists, keep_best, record)
    metrics["accuracy"] = chosen.score.accuracy  # on the eval split, as every finalist was judged
    log.info(_kept_line(out_name, chosen, finalists[0], run.own, mixed))
    return _save(zoo, run, out_name, chosen.tensors, record, metrics, embed)


def _kept_line(out_name: str, chosen, first, own, mixed) -> str:
    """What was kept and, where keep-best put another finalist in place of the run's result, why."""
    kept = (f"expert of {chosen.what[7:]} alone" if chosen.what.startswith("source ") else "base model (the zoo's "
            "untrained starting expert)" if chosen.what == "base" else f"{chosen.what} expert")
    line = (f"{out_name}: kept the {kept}, accuracy {chosen.score.accuracy:.3f} on the eval split (target alone "
            f"{own.accuracy:.3f}" + (f", interpolated {mixed.accuracy:.3f})" if mixed else ", no sources)"))
    if chosen is not first:
        line += f"; it beat the {first.what} result on the eval split: {why_better(chosen.score, first.score)}"
    return line


def _records(zoo, run: _Run, target: str, sources: list, candidates: list[str], options: dict) -> tuple[dict, dict]:
    """The provenance record and the first metrics of an interpolation, filled in as it runs."""
    record = {"target": target, "root": root_of(zoo, target),
              "sources": [{**c.to_json(), "root": root_of(zoo, c.task)} for c in sources],
              "mode": options["mode"], "granularity": options["granularity"], "init": options["init"],
              "metric": options["metric"], "by": options["by"], "candidates": candidates,
              "alpha_lr": options["alpha_lr"], "k": len(sources)}
    metrics = {"accuracy_target": run.own.accuracy, "log_likelihood_target": run.own.log_likelihood,
               "n_train": len(run.train_rows), "n_eval": len(run.eval_rows)}
    return record, metrics


def _mix(run: _Run, choice, probe_states: dict, sources: list, experts: dict, alpha_on: str, record: dict,
         metrics: dict):
    """Tune the mixture of the chosen sources (none: the own expert stays); returns its eval score
    (or None) and every finalist the keep rule judges; finalists None on a non-main process."""
    finalists = _first_finalists(run, choice, probe_states)
    mixed = None
    if sources:
        tuned = _tune(run, [experts[c.task] for c in sources], [c.task for c in sources], alpha_on, record, metrics,
                      finalists)
        if tuned is None:
            return None, None
        mixed = tuned.score
        finalists += _source_finalists(run, [c.task for c in sources], experts)
    else:
        record.update(alpha={}, steps=0)
        metrics["steps"] = 0
    finalists += _base_finalist(run)
    if choice is not None and not choice.sources and choice.control_wins:  # k = 0: the better of own and control
        finalists.insert(0, next(f for f in finalists if f.what == "control"))
    return mixed, finalists


def _keep(run: _Run, choice, finalists: list, keep_best: bool, record: dict):
    """The finalist the keep rule picks, loaded into the run's model; the record says which and why."""
    chosen = keep(finalists, keep_best)
    run.em.load_state(chosen.tensors, where=f"{chosen.what} expert")
    record.update(kept=chosen.what, keep_best=keep_best, compared_on="eval split",
                  finalists={f.what: {"accuracy": f.score.accuracy, "calibrated_log_likelihood":
                                      f.score.calibrated_log_likelihood} for f in finalists})
    if choice is not None:
        record["auto"] = choice.record(run.run_steps)
    return chosen


def _first_finalists(run: _Run, choice, probe_states: dict) -> list:
    """Every expert the run made before tuning, judged later on the eval split: the own expert, the
    control (the own expert trained as long as a probe) and the chosen sources' probe."""
    finalists = [Finalist("target", run.own_state, run.own)]
    if choice is not None and choice.probes and choice.probes[0].steps:
        finalists.append(Finalist("control", probe_states[()], choice.probes[0].score))
    if choice is not None and choice.sources:
        best_probe = next(p for p in choice.probes if p.sources == choice.sources)
        finalists.append(Finalist("probe", probe_states[choice.sources], best_probe.score))
    return finalists


def _source_finalists(run: _Run, names: list[str], experts: dict) -> list:
    """Each chosen source's expert alone, with no target data: a corner of the mixture's simplex
    (α one-hot on the source), scored on the eval split with one forward pass. Offered only where
    the expert is the whole trainable state (a shared label space); a task-specific head would
    pair one task's expert with another's head."""
    if run.em.head:
        return []
    score = lambda n: run.em.score(run.eval_rows, params={k: t.to(run.em.device) for k, t in experts[n].items()})
    return [Finalist(f"source {n}", dict(experts[n]), score(n)) for n in names]


def _base_finalist(run: _Run) -> list:
    """The zoo's starting expert, untrained (the base model itself for LoRA, adapters and AdaLink),
    scored on the eval split with one forward pass: a few-shot expert can fall below it (measured in
    the multimodal demo: scene-qa's own expert 0.250, the base model 0.317). Offered where the expert
    is the whole trainable state, as each source alone is."""
    if run.em.head:
        return []
    state = {n: t.clone() for n, t in run.em.initial_state.items()}
    return [Finalist("base", state, run.em.score(run.eval_rows, params={n: t.to(run.em.device) for n, t in state.items()}))]


def _check_options(alpha_lr: float, alpha_on: str, by: str | None) -> None:
    if not (alpha_lr > 0 and math.isfinite(alpha_lr)):  # nan passes `<= 0`
        raise UsageError(f"--alpha-lr must be a positive number, got {alpha_lr}")
    if alpha_on not in ALPHA_ON:
        raise UsageError(f"--alpha-on {alpha_on!r} is not one of {', '.join(ALPHA_ON)}")
    check_by(by or "both")


def _start(zoo, target: str, cfg, spec: MixSpec, shots: int | None, alpha_lr: float) -> _Run:
    """The target's model, splits and own expert's score: what every step of the run reads."""
    from pizoo.tasks import load_task_model, task_data

    zoo.manifest(target)
    em, manifest = load_task_model(zoo, target, device_for(cfg))
    data = task_data(zoo, target, manifest, shots)
    train_rows = em.encode(data.train, data.label_ids(data.train))
    eval_rows = em.encode(data.eval, data.label_ids(data.eval))
    return _Run(target, em, data, train_rows, eval_rows, em.state(), em.score(eval_rows),
                planned_steps(cfg, len(train_rows)), cfg, spec, alpha_lr)


def _proposed(zoo, run: _Run, with_, n_sources: int | None, metric: str, by: str) -> tuple[list, list, dict]:
    """The ranked candidates (the one ranking path `pizoo similar` shows, pizoo.predict), the sources
    to try (the top AUTO_CANDIDATES for k auto), and their expert tensors. A broken expert among the
    proposed sources is left out with a warning, never fatal."""
    ranked = choose_sources(zoo, run.target, with_=with_, k=n_sources if with_ else None, metric=metric, by=by,
                            em=run.em, rows=run.train_rows)
    if with_:
        return ranked, ranked, {c.task: load_expert_part(zoo, c.task, run.em) for c in ranked}
    if n_sources is not None:
        check_k(n_sources, len(ranked))
    ranked, loaded = _loadable(zoo, ranked, run.em, need=n_sources or AUTO_CANDIDATES)
    if n_sources is not None and len(ranked) < n_sources:
        raise IncompatibleExperts(f"only {len(ranked)} of the top {n_sources} sources could be read",
                                  "pizoo verify, or ask for fewer: --k")
    sources = ranked[:AUTO_CANDIDATES] if n_sources is None else ranked
    return ranked, sources, {c.task: loaded[c.task] for c in sources}


def _auto(run: _Run, sources: list, experts: dict) -> tuple:
    """--k auto: pizoo.choose probes the candidates; returns its Choice and every probe's tensors
    (finalists for keep-best), keyed by their sources (() is the control)."""
    em, probe_states = run.em, {}

    def probe(names):
        if not names and run.spec.mode != "full":  # nothing would train: the control is the own expert
            return Probe((), run.own, 0)
        mixture, result = _run(em, [experts[n] for n in names], run.spec, run.train_rows,
                               dataclasses.replace(run.cfg, epochs=None, steps=probe_steps(run.run_steps)),
                               run.alpha_lr, f"probing {run.target} with {', '.join(names) or 'no source (control)'}")
        s = em.score(run.eval_rows, params=mixture.mixed())
        probe_states[tuple(names)] = mixture.result()  # a finalist for keep-best
        em.load_state(run.own_state, where="target expert")  # a full-mode probe trains it in place
        return Probe(tuple(names), s, result.steps)

    return choose([c.task for c in sources], run.own, probe), probe_states


def _tune(run: _Run, experts: list, names: list[str], alpha_on: str, record: dict, metrics: dict, finalists: list):
    """The mixture of the target and `experts`: the untuned soup and the tuned result join the
    finalists (the result first), their numbers the record and metrics. Returns the result's
    Finalist, or None on a non-main process of a distributed launch."""
    em, spec, eval_rows = run.em, run.spec, run.eval_rows
    mixture = Mixture(em, experts, spec)
    with torch.no_grad():
        soup = em.score(eval_rows, params=mixture.mixed())
    finalists.append(Finalist(f"{spec.init} mixture", mixture.result(), soup))
    metrics[f"accuracy_{spec.init}_mixture"] = soup.accuracy
    log.info(f"interpolating {run.target} with {', '.join(names)}: target alone {run.own.accuracy:.3f}, "
             f"{spec.init} mixture before tuning {soup.accuracy:.3f}")
    mixed = None
    if spec.mode == "alpha" and alpha_on == "held-out" and len(eval_rows) >= HELD_OUT_MIN:
        cfg_run = dataclasses.replace(run.cfg, epochs=None, steps=run.run_steps)  # a training-split run's steps
        mixture, result, mixed = _alpha_held_out(em, experts, spec, eval_rows, cfg_run, run.alpha_lr,
                                                 f"interpolating {run.target}")
        record["alpha_fitted_on"] = "eval split, two-fold (the interpolated expert scored out of fold)"
    else:
        result = _fit(mixture, run.train_rows, run.cfg, run.alpha_lr, f"interpolating {run.target}")
        record["alpha_fitted_on"] = "train split"
        if spec.mode == "alpha" and alpha_on == "held-out":
            log.warning(f"the eval split of {run.target} has {len(eval_rows)} examples, fewer than {HELD_OUT_MIN}: "
                        "α is fitted on the training split, where the target's own expert is favoured")
    if not result.is_main_process:
        return None
    tensors = mixture.result()
    em.load_state(tensors, where="interpolated expert")
    mixed = mixed if mixed is not None else em.score(eval_rows)
    finalists.insert(0, Finalist("interpolated", tensors, mixed))
    record.update(alpha=mixture.alpha_record(), steps=result.steps)
    metrics.update(accuracy_interpolated=mixed.accuracy, log_likelihood_interpolated=mixed.log_likelihood,
                   steps=result.steps, loss_first=result.first_loss,
                   loss_last=result.last_loss, train_seconds=round(result.seconds, 2))
    return finalists[0]


def _save(zoo, run: _Run, out_name: str, tensors: dict, record: dict, metrics: dict, embed: bool):
    """The kept expert as a new task, with the target's splits and (embed) its embedding."""
    from pizoo.models import save_tensors
    from pizoo.tasks import provenance, split_writers

    files = TaskFiles(expert=lambda p: save_tensors(tensors, p), **split_writers(run.data),
                      embedding=embedding_writer(run.em, run.train_rows, seed=run.cfg.seed) if embed else None)
    training = {**dataclasses.asdict(run.cfg), "max_length": run.em.max_length}
    out = TaskManifest(name=out_name, labels=run.data.labels, source={**run.data.source, "derived_from": run.target},
                       metrics=metrics,
                       provenance=provenance(zoo.spec, how="interpolate", training=training, interpolation=record))
    return zoo.save_task(out, files)


def _loadable(zoo, ranked: list, em: ExpertModel, need: int) -> tuple[list, dict]:
    """The first `need` candidates whose experts can be read (checked), in order, and their expert
    tensors; the unreadable ones passed over are named on stderr."""
    out, loaded, skipped = [], {}, []
    for c in ranked:
        if len(out) == need:
            break
        try:
            loaded[c.task] = load_expert_part(zoo, c.task, em)
            out.append(c)
        except PizooError as e:
            skipped.append(f"{c.task} ({e.message})")
    if skipped:
        log.warning("skipped sources whose expert could not be read: " + "; ".join(skipped) + " — pizoo verify")
    return out, loaded


def _fit(mixture: Mixture, rows, cfg, alpha_lr: float, desc: str):
    return fit(mixture, rows, mixture.em.collate, cfg, desc=desc, lr_overrides={id(mixture.alpha): alpha_lr})


def _run(em: ExpertModel, experts, spec: MixSpec, rows, cfg, alpha_lr: float, desc: str):
    mixture = Mixture(em, experts, spec)
    return mixture, _fit(mixture, rows, cfg, alpha_lr, desc)


ALPHA_ON = ("held-out", "train")
HELD_OUT_MIN = 8  # eval examples below which α is fitted on the training split after all


def _alpha_held_out(em: ExpertModel, experts, spec: MixSpec, rows, cfg, alpha_lr: float, desc: str):
    """Mode alpha, with α fitted where the target's expert has not already fitted the data: on the
    eval split. On its own training split the target's expert is near-perfect by construction, so α
    learns only to weigh the target up (measured: softmax weight 0.82-0.84 on every target, at Adam's
    step rate); on held-out examples the mixture is judged on what the experts generalise.

    Two folds (the split halved, labels alternating): each half's α is scored on the other half, and
    that out-of-fold Score is what keep-best judges the result by, as honest as a score on untouched
    data; the α kept is then fitted on the whole split. Returns (mixture, fit result, Score)."""
    from pizoo.models import score_of

    order = sorted(range(len(rows)), key=lambda i: (rows[i]["label"], i))
    folds = [sorted(order[0::2]), sorted(order[1::2])]
    scores = torch.empty(len(rows), len(em.labels))
    for fit_on, score_on in ((folds[0], folds[1]), (folds[1], folds[0])):
        mixture, _ = _run(em, experts, spec, [rows[i] for i in fit_on], cfg, alpha_lr, f"{desc} (α fold)")
        scores[score_on] = em.class_scores([rows[i] for i in score_on], params=mixture.mixed())
    out_of_fold = score_of(scores, torch.tensor([r["label"] for r in rows]))
    mixture, result = _run(em, experts, spec, rows, cfg, alpha_lr, desc)
    return mixture, result, out_of_fold


def curve(zoo, target: str, other: str, points: int = 21, device: str = "cpu") -> list[dict]:
    """Accuracy on the target's eval split along (1-t)·φ_target + t·φ_other (paper, Fig. 3a)."""
    from pizoo.tasks import load_task_model, task_data

    if points < 2:
        raise UsageError(f"--points must be at least 2, got {points}")
    if other == target:
        raise UsageError("--with names the target itself")
    em, manifest = load_task_model(zoo, target, device)
    zoo.manifest(other)
    a = {n: p.detach().clone() for n, p in em.expert.items()}
    b = {n: t.to(em.device) for n, t in load_expert_part(zoo, other, em).items()}
    td = task_data(zoo, target, manifest)
    rows = em.encode(td.eval, td.label_ids(td.eval))
    out = []
    with progress.task(f"curve {target} → {other}", points) as advance:
        for i in range(points):
            t = i / (points - 1)
            out.append({"t": round(t, 6), "accuracy": em.accuracy(rows, params=lerp(a, b, t))})
            advance()
    return out
