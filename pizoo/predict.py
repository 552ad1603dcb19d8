"""Predict, then interpolate: which experts of the zoo will help a target. One path for `similar`,
`similar --data` and `interpolate`, in two stages:

1. recall (`fisher`): the R tasks nearest the target by task embedding, from the zoo's index of
   sketches: one matrix product over every task, so it stays cheap at 10,000 tasks. The default
   embedding is the Fisher at the zoo's shared probe (`--which probe`): every task's is taken at
   the same point, so it compares tasks, not where each expert ended up. Measured on the packaged
   tasks (benchmarks/ranking.py) its top 2 held the target's own family in every run (1.00),
   against 0.57 for the Fisher at each task's own expert at 16 shots, where one task was the
   nearest neighbour of most targets;
2. precision (`fit`): each recalled expert's own fit to the target's labelled examples: the mean
   log-likelihood of their gold labels and the accuracy, forward passes only. One label space lets
   any expert score any task (a shared-space head), so this is the most direct prediction of a
   source's use short of training with it (cf. LEEP, LogME, LoraHub's few-shot loss). The base is
   loaded once; each candidate's tensors are swapped in functionally, and the target's label texts
   are encoded once per candidate.

The log-likelihood is taken after one temperature per candidate, fitted on the same examples
(`calibrated`): an expert trained to confidence on its own task is often right and overconfident
on a neighbour's, and the mixture's α and training rescale it anyway; what predicts use is how well
the expert orders the target's labels, not its temperature. Candidates are ordered by it, then by
accuracy; without labelled data (an imported adapter) or with a per-task head, by the embedding.

`--k auto`'s probes (pizoo.choose) run on the best few of this ranking: the last, costly check."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from pizoo import progress
from pizoo.choose import compare
from pizoo.errors import PizooError, UsageError
from pizoo.progress import log
from pizoo.zoo import Zoo

if TYPE_CHECKING:  # annotations only: importing the model layer here would load torch
    from pizoo.models import ExpertModel

BY = ("fisher", "fit", "both")
RECALL = 100  # R: tasks taken from the index for the fit stage (`both`)
# The fit stage races its candidates where there are many (successive halving): every one is first
# scored on a few of the target's examples (one per label in turn, cut to HEAT_TOKENS: the heats);
# RACE_KEEP of them (at least the k asked for), half nominated by the embedding and half by the
# heats, go on to SEMI_EXAMPLES whole examples; the best half of those (at least the k asked for;
# `--k auto` probes the top 4) go on to every example. After the heats each round scores only the
# examples its candidates have not seen. The cost is a forward pass per example (measured: ~13-16 ms
# for a MiniLM example of 70-128 tokens on 2 cores): at R = 100, N = 80 the heats take 800 short
# examples, the later rounds 8 x 32 + 4 x 48 = 448 whole ones.
RACE_EXAMPLES = 8
# The heats' rows are cut to this many token positions (Head.shorten): half MiniLM's 128, the
# length of most reviews, the first paragraph of an article. Measured in a zoo of 10,000
# (benchmarks/ranking_scale.py): 0.65x the heats' time on 128-token rows, the same nominees on every
# packaged target; at 32 a random distractor the short heats let through beat the base model on 32
# rows by chance and took a sibling's place in one target's top 4 (clothing-department).
HEAT_TOKENS = 64
RACE_KEEP = 8
SEMI_EXAMPLES = 32


@dataclass(frozen=True)
class Candidate:
    """One task of the zoo as a source for a target: its embedding similarity and its fit."""
    task: str
    similarity: float | None = None  # task-embedding similarity (the metric of the ranking)
    fit_log_likelihood: float | None = None  # mean log p(gold) on the target's examples, calibrated
    fit_raw_log_likelihood: float | None = None  # the same at the expert's own temperature
    fit_accuracy: float | None = None
    fit_temperature: float | None = None
    beats_base: bool | None = None  # the fit beats the base model's (the zoo's starting expert) beyond noise
    fit_examples: int | None = None  # target examples the fit was taken on (fewer: left behind by the race)

    def key(self, by: str) -> tuple:
        if by == "fisher" or self.fit_log_likelihood is None:
            return (-(self.similarity if self.similarity is not None else -math.inf), self.task)
        return (-self.fit_log_likelihood, -(self.fit_accuracy or 0.0), self.task)

    def to_json(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Ranking:
    """The candidates, best first, and what the ranking cost."""
    target: str
    by: str
    metric: str
    candidates: tuple[Candidate, ...]
    recalled: int = 0  # tasks the fit stage scored
    fisher_seconds: float = 0.0
    fit_seconds: float = 0.0
    n_examples: int = 0  # target examples each candidate was fitted on
    skipped: tuple[str, ...] = field(default=())

    @property
    def fit_seconds_per_candidate(self) -> float:
        return self.fit_seconds / self.recalled if self.recalled else 0.0

    def names(self) -> list[str]:
        return [c.task for c in self.candidates]

    def rows(self) -> list[dict]:
        """One JSON-ready row per candidate (rank, task, similarity, fit_*)."""
        return [{"rank": i + 1, **c.to_json(), "by": self.by} for i, c in enumerate(self.candidates)]

    def cost(self) -> dict:
        return {"by": self.by, "metric": self.metric, "recalled": self.recalled, "n_examples": self.n_examples,
                "fisher_seconds": round(self.fisher_seconds, 4), "fit_seconds": round(self.fit_seconds, 4),
                "fit_seconds_per_candidate": round(self.fit_seconds_per_candidate, 4)}


def check_by(by: str) -> None:
    if by not in BY:
        raise UsageError(f"--by {by!r} is not one of {', '.join(BY)}")


def default_by(zoo, has_data: bool) -> str:
    """both where the fit can be taken (labelled data, a shared-space head), else fisher."""
    from pizoo.heads import get_head

    return "both" if has_data and not get_head(zoo.spec.head).per_task else "fisher"


def default_group(zoo) -> str:
    """The embedding that recalls: the Fisher at the shared probe where one label space makes tasks
    comparable at one point (measured: benchmarks/ranking.py), the Fisher at each expert with a
    per-task head (whose probe is a random head over each task's own labels; not measured better)."""
    from pizoo.heads import get_head

    return "expert" if get_head(zoo.spec.head).per_task else "probe"


def check_fit_possible(zoo, by: str) -> None:
    from pizoo.heads import get_head

    if by != "fisher" and get_head(zoo.spec.head).per_task:
        raise UsageError(f"--by {by} scores every expert on the target's labels, which a per-task "
                         f"{zoo.spec.head!r} head cannot do", "use --by fisher (or a zoo with the match head)")


# -- calibrated fit ------------------------------------------------------------------------------
def fit_scores(em: ExpertModel, rows: Sequence[dict], experts: dict[str, object]) -> dict:
    """Each expert's fit to `rows` (encoded with their gold labels): a Score (pizoo.models) with the
    accuracy, the raw and the calibrated log-likelihood, and their per-example values."""
    return {name: em.score(rows, params={n: t.to(em.device) for n, t in tensors.items()})
            for name, tensors in experts.items()}


def base_fit(em: ExpertModel, rows: Sequence[dict]):
    """The fit of the zoo's shared starting expert (the base model itself for LoRA, adapters and
    AdaLink): what the target has from no source at all."""
    return em.score(rows, params={n: em.initial_state[n].to(em.device) for n in em.expert})


def fit_candidates(zoo, em: ExpertModel, rows: Sequence[dict], names: Sequence[str]) -> tuple[dict, float, list[str], object]:
    """The fit (a Score) of each named task's expert to `rows`, the seconds it took, the tasks skipped
    (a corrupt or foreign expert is named and left out, never fatal for the target), and the base fit."""
    from pizoo.models import score_of

    gold = _gold(rows)
    base = score_of(_base_scores(em, rows), gold)
    raws, seconds, skipped = _raw_fits(zoo, em, rows, names)
    return {n: score_of(r, gold) for n, r in raws.items()}, seconds, skipped, base


def _gold(rows: Sequence[dict]):
    import torch

    return torch.tensor([r["label"] for r in rows])


def _base_scores(em: ExpertModel, rows: Sequence[dict]):
    """The base's (N, L) prediction scores on `rows` (see base_fit)."""
    return em.class_scores(rows, params={n: em.initial_state[n].to(em.device) for n in em.expert})


def _raw_fits(zoo, em: ExpertModel, rows: Sequence[dict], names: Sequence[str]) -> tuple[dict, float, list[str]]:
    """Each named task's (N, L) prediction scores on `rows`, the seconds, and the tasks skipped. The
    scores, not Scores: the race extends the heats' with the other rows' instead of scoring the
    heat rows twice."""
    from pizoo.interpolate import load_expert_part

    raws, skipped = {}, []
    start = time.perf_counter()
    with progress.task(f"fitting {len(names)} experts to {len(rows)} of the target's examples", len(names)) as advance:
        for name in names:
            try:
                tensors = load_expert_part(zoo, name, em)
                raws[name] = em.class_scores(rows, params={n: t.to(em.device) for n, t in tensors.items()})
            except PizooError as e:
                skipped.append(f"{name} ({e.message})")
            advance()
    if skipped:
        log.warning("skipped experts that could not be read: " + "; ".join(skipped) + " — check them: pizoo verify")
    return raws, time.perf_counter() - start, [s.split(" (")[0] for s in skipped]


def race_rows(rows: Sequence[dict], n: int) -> list[dict]:
    """`n` of `rows` for the race's first round, taken one label at a time in turn (the rows' own order
    within a label, so the same rows every call): every label is seen even at n = 16 of 10 labels."""
    by_label: dict = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    out, i = [], 0
    while len(out) < n:
        for group in by_label.values():
            if i < len(group) and len(out) < n:
                out.append(group[i])
        i += 1
    return out


def fit_stage(zoo, em: ExpertModel, rows: Sequence[dict], names: Sequence[str], sims: dict, keep: int,
              final: int | None = None) -> tuple[list, float, list]:
    """The fitted candidates, in order, the seconds, and the tasks skipped. `names` come in the
    embedding's order. Many candidates race in rounds over the rows (labels in turn): the heats,
    all on RACE_EXAMPLES rows cut to HEAT_TOKENS; `keep` of them (half the embedding's first, half
    the heats' best fits) on SEMI_EXAMPLES whole rows; the best `final` of those on every row
    (successive halving: the full fit is spent where the order matters), each round scoring only
    the rows its candidates have not seen. Those come first, ordered by their fit on every row;
    each earlier round's others follow by their fit there."""
    from pizoo.models import score_of

    final = max(1, min(keep, final or keep))
    if len(names) <= keep or len(rows) <= RACE_EXAMPLES:
        fits, seconds, skipped, base = fit_candidates(zoo, em, rows, names)
        return order([candidate(n, sims[n], fits[n], base, len(rows)) for n in names if n in fits], fits), seconds, skipped
    every = race_rows(rows, len(rows))  # each round takes the next rows: labels in turn
    start, skipped = time.perf_counter(), []
    alive, tail = _heats(zoo, em, every[:RACE_EXAMPLES], list(names), sims, keep, skipped)
    stops = [SEMI_EXAMPLES] if final < keep and SEMI_EXAMPLES < len(every) else []
    base_all, gold = _base_scores(em, every), _gold(every)
    raws, seen = {}, 0
    for stop, width in zip([*stops, len(every)], [final][: len(stops)] + [None]):
        alive, fits = _next_round(zoo, em, every[seen:stop], alive, raws, gold[:stop], skipped)
        seen, base = stop, score_of(base_all[:stop], gold[:stop])
        ranked = order([candidate(n, sims[n], fits[n], base, stop) for n in alive], fits)
        if width is None:
            return ranked + tail, time.perf_counter() - start, skipped
        alive = _nominees(alive, ranked, width, heats=False)
        tail = [c for c in ranked if c.task not in alive] + tail


def _heats(zoo, em: ExpertModel, rows: Sequence[dict], names: list[str], sims: dict, keep: int, skipped: list
           ) -> tuple[list[str], list["Candidate"]]:
    """The race's first round: every candidate on `rows` cut to HEAT_TOKENS (a heat tells a relative
    from a stranger, which a text's beginning does; the later rounds score whole rows). Who goes on,
    in the embedding's order, and the others, ordered by their fit in the heats."""
    from pizoo.models import score_of

    short = [em.head_type.shorten(em, r, HEAT_TOKENS) for r in rows]
    gold = _gold(short)
    alive, fits = _next_round(zoo, em, short, names, {}, gold, skipped)
    base = score_of(_base_scores(em, short), gold)
    ranked = sorted((candidate(n, sims[n], fits[n], base, len(rows)) for n in alive), key=lambda c: c.key("fit"))
    ahead = _nominees(alive, ranked, keep, heats=True)
    return ahead, [c for c in ranked if c.task not in ahead]


def _next_round(zoo, em: ExpertModel, new_rows: Sequence[dict], alive: list[str], raws: dict, gold, skipped: list):
    """Score the `alive` candidates on the rows they have not seen, extending their scores in `raws`;
    the candidates still in (an unreadable one drops out, named in `skipped`) and their fits so far."""
    import torch

    from pizoo.models import score_of

    more, _, lost = _raw_fits(zoo, em, new_rows, alive)
    skipped += lost
    for n, r in more.items():
        raws[n] = torch.cat([raws[n], r]) if n in raws else r
    alive = [n for n in alive if n in more]
    return alive, {n: score_of(raws[n], gold) for n in alive}


def _nominees(alive: list[str], ranked: list["Candidate"], width: int, heats: bool) -> list[str]:
    """Who of `ranked` (this round's order) goes on, in the embedding's order (`alive`'s). After the
    heats, half by the embedding and the rest by the heats' fit: on 8 examples the fit is noisy
    (measured: it let random distractors pass a relative the embedding had ranked second), and the
    embedding alone misses what only the fit sees. After a later round, the best by fit."""
    ahead = alive[: width // 2] if heats else []
    ahead += [c.task for c in ranked if c.task not in ahead][: width - len(ahead)]
    return [n for n in alive if n in ahead]


def candidate(name: str, similarity: float | None, fit=None, base=None, n: int | None = None) -> "Candidate":
    """A Candidate from its similarity and its fit Score (None: not fitted) on `n` examples, judged
    against the base's."""
    if fit is None:
        return Candidate(name, similarity)

    return Candidate(name, similarity, fit.calibrated_log_likelihood, fit.log_likelihood, fit.accuracy,
                     fit.temperature, None if base is None else compare(fit, base) > 0, n)


def order(scored: list["Candidate"], fits: dict | None = None) -> list["Candidate"]:
    """The fitted candidates, best first: those whose fit beats the base model's beyond noise, by fit;
    then the others by embedding. An expert that does no better on the target than the frozen base
    model carries nothing the fit can see (an untrained or near-identity expert fits exactly as well
    as the base does where the base is already good), so there the embedding's family signal decides.
    With the fits (Scores with per-example values), two neighbours whose fits differ by no more than
    noise are ordered by the embedding too (_ties_to_embedding)."""
    ahead = sorted((c for c in scored if c.beats_base is not False), key=lambda c: c.key("fit"))
    rest = sorted((c for c in scored if c.beats_base is False), key=lambda c: c.key("fisher"))
    return (_ties_to_embedding(ahead, fits) if fits else ahead) + rest


def _ties_to_embedding(ranked: list["Candidate"], fits: dict) -> list["Candidate"]:
    """Where the fit cannot tell two neighbours apart (pizoo.choose.compare: no paired difference in
    accuracy or calibrated log-likelihood beyond noise), the one the embedding ranks higher goes
    first: the fit speaks where it is sure, the embedding is the prior where it is not (measured in
    the multimodal demo: on 96 shots of ref-g the fit put mnist-digit 0.004 nats ahead of ref, its
    sibling, whose Fisher similarity is 0.91 against 0.49). Each swap removes an inversion of the
    embedding's order, so the passes end."""
    sim = lambda c: c.similarity if c.similarity is not None else -math.inf  # noqa: E731
    out, swapped = list(ranked), True
    while swapped:
        swapped = False
        for i in range(len(out) - 1):
            a, b = out[i], out[i + 1]
            if sim(b) > sim(a) and compare(fits[a.task], fits[b.task]) == 0:
                out[i], out[i + 1], swapped = b, a, True
    return out


# -- the two stages ------------------------------------------------------------------------------
def rank_sources(zoo, target: str, *, by: str = "both", metric: str = "cosine", group: str | None = None,
                 em: ExpertModel | None = None, rows: Sequence[dict] | None = None, count: int | None = None,
                 recall_count: int = RECALL, distinct: bool = True) -> Ranking:
    """The zoo's tasks as sources for `target`, best first: at least the top `count` (None: every
    task for fisher and fit, the R recalled for both).

    by fisher: the embedding alone; fit: every task's fit (exhaustive); both: the embedding recalls
    `recall_count` tasks, the fit orders them. `em` and `rows` (the target's labelled examples,
    encoded) are needed for fit/both. `distinct`: one version per task root (X, X-pi, ... count
    once) and never the target's own derivatives."""
    _check(zoo, by)
    if by != "fisher" and (em is None or not rows):
        raise UsageError(f"--by {by} needs the target's labelled examples", "use --by fisher")
    exclude = _same_root(zoo, target) if distinct else ()
    group = group or default_group(zoo)
    start = time.perf_counter()
    ranked = _recall_distinct(zoo, target, metric, group, _wanted(by, count, recall_count), exclude, distinct)
    return _finish(zoo, target, by, metric, ranked, time.perf_counter() - start, em, rows, recall_count, count)


def rank_data(zoo, vec: dict, em: ExpertModel, rows: Sequence[dict], *, by: str, metric: str, label: str,
              recall_count: int = RECALL, count: int | None = None) -> Ranking:
    """The same two stages for data that has no expert yet: `vec` is its probe embedding; at least
    the top `count` come back (None: every task for fisher and fit, the R recalled for both)."""
    from pizoo.embed import ranked_by_vector

    _check(zoo, by)
    start = time.perf_counter()
    ranked = ranked_by_vector(zoo, vec, metric=metric, group="probe",
                              count=_at_most(zoo, _wanted(by, count, recall_count)))
    return _finish(zoo, label, by, metric, ranked, time.perf_counter() - start, em, rows, recall_count, count)


def _check(zoo, by: str) -> None:
    check_by(by)
    if by != "fisher":
        check_fit_possible(zoo, by)


def _wanted(by: str, count: int | None, recall_count: int) -> int | None:
    """How many the embedding stage must return: all for fit, R (or more) for both, count for fisher."""
    if not isinstance(recall_count, int) or recall_count < 1:
        raise UsageError(f"--recall must be at least 1, got {recall_count}")
    return None if by == "fit" else max(recall_count, count or 0) if by == "both" else count


def _finish(zoo, target: str, by: str, metric: str, ranked: list[tuple[str, float]], fisher_seconds: float,
            em: ExpertModel, rows, recall_count: int, count: int | None) -> Ranking:
    """The fit stage over the recalled tasks (none for fisher), and the Ranking. `fit` scores every
    task on every example (exhaustive); `both` races the recalled ones (fit_stage)."""
    if by == "fisher":
        return Ranking(target, by, metric, tuple(Candidate(n, s) for n, s in ranked), 0, fisher_seconds)
    sims = dict(ranked)
    head = [n for n, _ in ranked] if by == "fit" else [n for n, _ in ranked[:recall_count]]
    keep = len(head) if by == "fit" else max(RACE_KEEP, count or 0)
    scored, seconds, skipped = fit_stage(zoo, em, rows, head, sims, keep, final=max(RACE_KEEP // 2, count or 0))
    fitted = {c.task for c in scored}
    tail = [Candidate(n, s) for n, s in ranked if n not in fitted and n not in skipped]
    return Ranking(target, by, metric, tuple(scored + tail), len(head), fisher_seconds, seconds, len(rows),
                   tuple(skipped))


def _at_most(zoo, want: int | None) -> int | None:
    """`want`, or None (all) where the zoo holds fewer tasks than that."""
    return None if want is None or want >= len(zoo.task_names()) else want


def _recall_distinct(zoo, target, metric, group, want, exclude, distinct) -> list[tuple[str, float]]:
    """The top `want` (None: all) by embedding, one per root task when `distinct`; asks the index
    for more when versions of one root take places."""
    from pizoo.embed import ranked_by_embedding

    ask = want
    while True:
        try:
            ranked = ranked_by_embedding(zoo, target, metric=metric, group=group, count=ask, exclude=exclude)
        except UsageError:  # fewer tasks than asked for: take them all
            if ask is None:
                raise
            ranked, ask = ranked_by_embedding(zoo, target, metric=metric, group=group, exclude=exclude), None
        out = _one_per_root(zoo, ranked) if distinct else ranked
        if want is None or ask is None or len(out) >= want:
            return out if want is None else out[:want]
        ask *= 2


def root_of(zoo, name: str) -> str:
    """The task a task was ultimately made for: X for X-pi, X-pi-pi, ..."""
    seen = {name}
    while True:
        try:
            target = zoo.manifest(name).provenance.get("interpolation", {}).get("target")
        except PizooError:  # an unreadable task is its own root; verify reports it
            return name
        if not target or target in seen or not zoo.has_task(target):
            return name
        seen.add(target)
        name = target


def _same_root(zoo, target: str) -> tuple[str, ...]:
    roots = {n: root_of(zoo, n) for n in zoo.task_names()}
    own = roots.get(target, target)
    return tuple(n for n, r in roots.items() if r == own)


def _one_per_root(zoo, ranked: list[tuple[str, float]]) -> list[tuple[str, float]]:
    out, seen = [], set()
    for name, sim in ranked:
        root = root_of(zoo, name)
        if root not in seen:  # one version per root task: the most similar
            seen.add(root)
            out.append((name, sim))
    return out


def similar_to_task(zoo, name: str, *, k: int | None = None, metric: str = "cosine", group: str | None = None,
                    by: str | None = None, device: str = "cpu", recall_count: int = RECALL) -> Ranking:
    """`pizoo similar NAME`: the zoo's tasks as sources for task `name`, ranked as `interpolate`
    proposes them (the same candidates for the same target): by embedding, then by each expert's
    fit to the task's training split (default both where the task has data and the head a shared
    label space)."""
    manifest = zoo.manifest(name)
    if by is None:
        by = default_by(zoo, has_data=has_data(manifest))
    check_by(by)
    em = rows = None
    if by != "fisher":
        check_fit_possible(zoo, by)
        from pizoo.tasks import load_task_model, task_data

        em, manifest = load_task_model(zoo, name, device)
        td = task_data(zoo, name, manifest)
        rows = em.encode(td.train, td.label_ids(td.train))
    ranking = rank_sources(zoo, name, by=by, metric=metric, group=group, em=em, rows=rows, count=k,
                           recall_count=recall_count)
    if k is not None:
        from pizoo.embed import check_k

        check_k(k, len(ranking.candidates))
        ranking = Ranking(**{**ranking.__dict__, "candidates": ranking.candidates[:k]})
    return ranking


def has_data(manifest) -> bool:
    """Whether a task has labelled examples to fit experts on (its kept split or its source file)."""
    return Zoo.has_splits(manifest) or "columns" in manifest.source
