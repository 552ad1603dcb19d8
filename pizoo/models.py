"""The base model, its processor, a task's expert attached to it, and the one forward every head
builds log p(y|x) on. Nothing here depends on which head or input type a zoo uses: the head
(pizoo.heads) owns the model class, the batches and the likelihood."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.func import functional_call

from pizoo.basemodel import (  # noqa: F401  (re-exported: the model layer's base-model helpers)
    DEFAULT_MODEL_PIP,
    default_base_model,
    fingerprint,
    read_model_type,
    resolve_base,
    tower_types,
)
from pizoo.config import ZooSpec
from pizoo.errors import (
    CorruptFile,
    DataError,
    IncompatibleExperts,
    ModelError,
    UsageError,
)
from pizoo.experts import get_kind
from pizoo.heads import get_head
from pizoo.progress import log

HEAD_PREFIX = "head."


@contextmanager
def quiet_transformers():
    """from_pretrained warns about the (re-initialised) task head on every load; that is expected."""
    import transformers

    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        transformers.logging.set_verbosity(before)


# -- expert files -----------------------------------------------------------------------------
def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptFile(f"{path} is not a readable safetensors file ({e})", "pizoo verify") from e


def split_head(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    expert = {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}
    head = {k: v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    return expert, head




# -- a model with one expert attached ---------------------------------------------------------
def _checked_base(spec: ZooSpec) -> Path:
    """The zoo's base model folder, the very one the zoo was made with; remote code only if asked."""
    path = resolve_base(spec.base_model)
    if fingerprint(path, spec.schema_version) != spec.fingerprint:
        raise IncompatibleExperts(f"the base model at {path} is not the one this zoo was made with "
                                  f"(fingerprint {fingerprint(path, spec.schema_version)} != {spec.fingerprint})",
                                  "restore that model, or make a new zoo with pizoo init")
    check_remote_code(spec)
    return path


def _text_room(config, prefix: int, max_length: int) -> int:
    """The text length the model can read, less the prompt's virtual tokens; a --max-length above it
    is cut (with a warning when the user gave it; 128 is the flags' default)."""
    text_config = getattr(config, "text_config", None) or config
    positions = getattr(text_config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return max_length
    room = positions - prefix
    if room < 4:
        raise UsageError(f"--virtual-tokens {prefix} leaves {room} of the model's {positions} positions "
                         "for the text", f"use at most {positions - 4} virtual tokens")
    if max_length <= room:
        return max_length
    if max_length != 128:
        log.warning(f"--max-length {max_length} is more than the {room} positions the model has for a "
                    f"text: texts are cut to {room} tokens")
    return room


class ExpertModel:
    """The zoo's frozen base model with one expert (and, for a per-task head, that task's head).

    `log_probs(batch, params)` is the one likelihood everything uses (training, evaluation, Fisher,
    interpolation); `params` (canonical name -> tensor) swaps the expert functionally. `labels` are
    the label texts of the task at hand; with a shared-space head they can be any task's.
    """

    def __init__(self, spec: ZooSpec, labels: Sequence[str], device: str | torch.device = "cpu",
                 max_length: int = 128, head_seed: int | None = None):
        self.spec, self.labels, self.max_length = spec, tuple(labels), max_length
        self.kind = get_kind(spec.kind)
        self.head_type = get_head(spec.head)
        path = _checked_base(spec)
        self.head_options = self.head_type.normalize_options(spec.head_options, path)
        self.cache: dict[str, Any] = {}
        self.owner: torch.Tensor | None = None  # which example each row of the running forward belongs to
        self.tokenizer = load_processor(path, spec.trust_remote_code)
        self.image_processor = load_image_processor(path, spec.trust_remote_code)
        self.hf, self.wrapped = self._attach(path)
        hf = self.hf
        self.expert = self.kind.parameters(self.wrapped)
        module = self.head_type.task_module(hf)
        self.head: dict[str, nn.Parameter] = {HEAD_PREFIX + n: p for n, p in module.named_parameters()} if module else {}
        self.init_head(head_seed)
        self.initial_state = self.state()  # the zoo's shared starting expert: what a task has with no training
        for p in self.trainable().values():
            p.requires_grad_(True)
        self._live = {id(p): n for n, p in self.wrapped.named_parameters(remove_duplicate=False)}
        self._runner = _Runner(self.wrapped)
        self.prefix = self.kind.prefix_length(spec.options)
        self.max_length = _text_room(hf.config, self.prefix, max_length)
        self.wrapped.to(device)
        self.wrapped.eval()
        if self.labels:  # no labels: a structural check (init) that scores nothing
            self.head_type.prepare(self)

    def _attach(self, path: Path):
        """The frozen backbone and the same model with the zoo's expert attached (trainable parts
        frozen here too: peft may unfreeze more than pizoo trains)."""
        with quiet_transformers():
            hf = load_backbone(path, self.head_type, self.labels, self.spec.trust_remote_code)
            if getattr(hf.config, "pad_token_id", None) is None and self.tokenizer is not None:
                hf.config.pad_token_id = self.tokenizer.pad_token_id
            for p in hf.parameters():
                p.requires_grad_(False)
            # Every expert of a zoo starts from the same seeded initialisation: experts trained from
            # one starting point stay comparable (Fisher) and mixable (interpolation, soups).
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.spec.seed)
                wrapped = self.kind.attach(hf, self.spec.options, self.head_type)
        for p in wrapped.parameters():
            p.requires_grad_(False)
        return hf, wrapped

    def init_head(self, seed: int | None) -> None:
        """Seeded head initialisation, independent of whatever from_pretrained drew."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = getattr(self.hf.config, "initializer_range", 0.02)
        with torch.no_grad():
            for name, p in self.head.items():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
                else:
                    p.zero_()

    # -- state ----------------------------------------------------------------------------
    def trainable(self) -> dict[str, nn.Parameter]:
        return {**self.expert, **self.head}

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.trainable().items()}

    def load_state(self, tensors: dict[str, torch.Tensor], where: str = "expert") -> None:
        """Load an expert (and head); any difference in names or shapes is an error naming both.

        A shared-space head has no tensors of its own, so any stored "head." tensors are refused."""
        want = self.trainable()
        got_names = set(tensors)
        if got_names != set(want):
            missing, extra = sorted(set(want) - got_names)[:3], sorted(got_names - set(want))[:3]
            raise IncompatibleExperts(f"{where} does not fit this zoo's {self.spec.kind} expert on "
                                      f"{self.spec.base_model}: missing {missing}, unexpected {extra}")
        with torch.no_grad():
            for name, value in tensors.items():
                p = want[name]
                if p.shape != value.shape:
                    raise IncompatibleExperts(f"{where}: tensor {name} has shape {tuple(value.shape)}, "
                                              f"this zoo's experts have {tuple(p.shape)}")
                if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    raise CorruptFile(f"{where}: tensor {name} has NaN or infinite values", "pizoo verify")
                p.copy_(value.to(p.device, p.dtype))

    @contextmanager
    def using_labels(self, labels: Sequence[str]):
        """Score another label set for a while (a shared-space head: any task's labels)."""
        saved = self.labels, self.cache
        self.labels, self.cache = tuple(labels), {}
        self.head_type.prepare(self)
        try:
            yield self
        finally:
            self.labels, self.cache = saved

    def live_name(self, param: torch.Tensor) -> str:
        return self._live[id(param)]

    @property
    def device(self) -> torch.device:
        return next(iter(self.expert.values())).device

    # -- data and the forward ------------------------------------------------------------------
    def encode(self, ex, label_ids: Sequence[int]) -> list[dict]:
        """Examples (and their label indices into `labels`) -> rows the head can batch. Examples that
        bring their own candidates (pizoo.candidates) carry them in each row."""
        own = getattr(ex, "candidates", None)
        if own is not None and not self.head_type.reads_candidates:
            raise UsageError(f"the {self.head_type.name!r} head cannot score each example's own candidates",
                             "make the zoo with the match head (pizoo init --head match)")
        rows = self.head_type.encode(self, ex, label_ids)
        if own is None:
            return rows
        widest = max(len(c) for c in own)
        if widest > len(self.labels):
            raise DataError(f"an example has {widest} candidates; this task was made with at most {len(self.labels)}")
        if ex.boxes is not None:  # boxes are regions of the row's image, not texts
            return [{**r, "candidates": [list(b) for b in c]} for r, c in zip(rows, own)]
        return [{**r, "candidates": list(c), **self.head_type.candidate_fields(self, list(c))}
                for r, c in zip(rows, own)]

    def collate(self, rows: Sequence[dict], label: int | None = None, per_example: bool = False) -> dict:
        return self.head_type.collate(self, rows, label=label, per_example=per_example)

    def forward(self, inputs: dict[str, torch.Tensor], params: dict[str, torch.Tensor] | None = None,
                owner: torch.Tensor | None = None, via=None):
        """The backbone (with the expert) on whatever the processor made; `owner` maps each row to
        its example for the per-example Fisher (None: every row is its own example). `via(inputs)`
        runs a part of the model instead of the whole (one tower of a dual encoder); with `params`
        that part runs on them too."""
        self.owner = owner
        if self.prefix and "token_type_ids" in inputs:  # peft drops them for prompt tuning (and warns)
            inputs = {k: v for k, v in inputs.items() if k != "token_type_ids"}
        call = via or (lambda kw: self.wrapped(**kw))
        try:
            if params is None:
                return call(inputs)
            live = {"model." + self._live[id(self.trainable()[k])]: v for k, v in params.items()}
            return functional_call(self._runner, live, args=(call, inputs), strict=False)
        finally:
            self.owner = None

    def log_probs(self, batch: dict, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """log p(y_j | x_j) of each example j."""
        return self.head_type.log_probs(self, batch, params)

    @torch.no_grad()
    def class_scores(self, rows: Sequence[dict], batch_size: int = 64,
                     params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """One score per (example, label): the head's prediction scores, in eval mode. The rows go in
        batches of like length (length_batches), and the scores come back in the rows' order."""
        was_training = self.wrapped.training
        self.wrapped.eval()
        try:
            with torch.no_grad():  # scores only: no graph to keep (the fit stage scores hundreds of experts)
                batches = length_batches([self.head_type.row_length(r) for r in rows], batch_size)
                scores = self.head_type.scores(self, [[rows[i] for i in b] for b in batches], params).float().cpu()
                if not rows:
                    return scores
                order = torch.tensor([i for b in batches for i in b])
                return torch.empty_like(scores).index_copy_(0, order, scores)
        finally:
            self.wrapped.train(was_training)

    def predict(self, rows: Sequence[dict], batch_size: int = 64,
                params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if not rows:
            return torch.empty(0, dtype=torch.long)
        return self.class_scores(rows, batch_size, params).argmax(-1)

    def accuracy(self, rows: Sequence[dict], params: dict[str, torch.Tensor] | None = None) -> float:
        return self.score(rows, params).accuracy

    def score(self, rows: Sequence[dict], params: dict[str, torch.Tensor] | None = None) -> "Score":
        """Accuracy and the mean log-likelihood of the gold label over the label set (softmax of the
        prediction scores): the second breaks ties of the first and is far less noisy."""
        if not rows:
            return Score(float("nan"), float("nan"))
        return score_of(self.class_scores(rows, params=params), torch.tensor([r["label"] for r in rows]))


# Scoring batches hold at most this many token positions: rows are sorted by length and a batch
# closes when one more row, padded to the batch's longest, would pass it. A short text is then
# never padded to a long one's length (the same scores, to float rounding); images (no token ids)
# batch by batch_size alone. Measured (benchmarks/scoring_batches.py, MiniLM on 2 CPU cores): 0.70x
# the old way's time at 1024, 0.68x at 512, 0.75x at 2048; small batches cost nothing on a CPU.
TOKENS_PER_BATCH = 1024


def length_batches(lengths: Sequence[int], batch_size: int, tokens: int | None = None) -> list[list[int]]:
    """Row indices in batches of like length, shortest first: at most `batch_size` rows and, past one
    row, at most `tokens` (default TOKENS_PER_BATCH) positions once padded (a row without tokens
    counts as one)."""
    tokens = tokens or TOKENS_PER_BATCH
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * max(lengths[i], 1) <= tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class _Runner(nn.Module):
    """Holds the model so that `functional_call` can swap its parameters for any call into it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, call, inputs):
        return call(inputs)


def score_of(scores: torch.Tensor, gold: torch.Tensor) -> "Score":
    """The Score of (N, L) prediction scores against the gold label ids (N,)."""
    ll = scores.log_softmax(-1).gather(1, gold[:, None])[:, 0]
    correct = (scores.argmax(-1) == gold).float()
    t = best_temperature(scores, gold)
    cal = (scores / t).log_softmax(-1).gather(1, gold[:, None])[:, 0]
    return Score(float(correct.mean()), float(ll.mean()), correct, float(cal.mean()), cal, t)


TEMPERATURES = tuple(2.0 ** (i / 4) for i in range(-16, 17))  # 1/16 .. 16: a grid, no optimiser to tune


def best_temperature(scores, gold) -> float:
    """The temperature (on a fixed grid, 1 included) that maximises the mean log-likelihood of the
    gold labels under (N, L) prediction scores."""
    best, best_t = -float("inf"), 1.0
    for t in (1.0, *TEMPERATURES):
        ll = float((scores / t).log_softmax(-1).gather(1, gold[:, None]).mean())
        if ll > best:
            best, best_t = ll, t
    return best_t



@dataclass(frozen=True, order=True)
class Score:
    """How well an expert does on a split; compared by accuracy, then log-likelihood. `correct` (each
    example's 0/1 outcome, in row order) allows paired comparisons of two experts on the same rows
    (pizoo.choose); so does `calibrated_each`, each example's log-likelihood of its gold label after
    one temperature fitted for this expert on these rows (`calibrated_log_likelihood` their mean):
    a proper score that an overconfident expert cannot lose by confidence alone."""
    accuracy: float
    log_likelihood: float
    correct: torch.Tensor | None = field(default=None, compare=False, repr=False)
    calibrated_log_likelihood: float | None = field(default=None, compare=False)
    calibrated_each: torch.Tensor | None = field(default=None, compare=False, repr=False)
    temperature: float | None = field(default=None, compare=False)


REMOTE_CODE_ENV = "PIZOO_TRUST_REMOTE_CODE"
remote_code_allowed = False  # set per command by the CLI's --trust-remote-code; scripts may set it


def check_remote_code(spec: ZooSpec) -> None:
    """A zoo.toml is data that may come from anyone: its request to run the model folder's code is
    honoured only when the user says so on the command line (--trust-remote-code) or in the
    environment (PIZOO_TRUST_REMOTE_CODE=1)."""
    if spec.trust_remote_code and not remote_code_allowed and os.environ.get(REMOTE_CODE_ENV) != "1":
        raise ModelError(f"this zoo's zoo.toml asks to run code from the model folder {spec.base_model} "
                         "(trust_remote_code), which pizoo does only when you say so",
                         f"pass --trust-remote-code (pizoo --trust-remote-code COMMAND ...) or set {REMOTE_CODE_ENV}=1")


_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json", "spiece.model", "tokenizer_config.json")


def load_processor(path: Path, trust_remote_code: bool = False):
    """The text side's processor: its tokenizer (AutoTokenizer), with a pad token. None for an
    image encoder alone (an image processor and no tokenizer files)."""
    from transformers import AutoTokenizer

    if has_image_processor(path) and not any((path / f).is_file() for f in _TOKENIZER_FILES):
        return None

    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelError(f"cannot load the tokenizer of {path}: {e}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def has_image_processor(path: Path) -> bool:
    """An image side as transformers saves it: preprocessor_config.json, or (transformers 5, a
    processor of several parts) processor_config.json with an image_processor entry."""
    if (path / "preprocessor_config.json").is_file():
        return True
    try:
        return "image_processor" in json.loads((path / "processor_config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def load_image_processor(path: Path, trust_remote_code: bool = False):
    """The image processor of a model with an image side; else None."""
    if not has_image_processor(path):
        return None
    from transformers import AutoImageProcessor

    try:
        with quiet_transformers():  # without torchvision transformers falls back to its PIL processors, and says so
            return AutoImageProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelError(f"cannot load the image processor of {path}: {(str(e).splitlines() or [''])[0][:300]}") from e


def load_backbone(path: Path, head, labels: Sequence[str], trust_remote_code: bool = False) -> nn.Module:
    """The base model through the Auto class its head names."""
    import transformers

    cls = getattr(transformers, head.auto_class_for(json.loads((path / "config.json").read_text())))
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": torch.float32,
                              **head.load_kwargs(labels)}
    try:
        return cls.from_pretrained(str(path), **kwargs)
    except Exception as e:
        raise ModelError(f"cannot load base model {path} as {cls.__name__} (head {head.name!r}): "
                         f"{(str(e).splitlines() or [''])[0][:300]}") from e

