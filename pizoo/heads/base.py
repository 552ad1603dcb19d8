"""The contract every head fulfils. One module per head; `register` adds it to the registry.

A head owns everything between the data and log p(y|x): which transformers class the zoo loads,
how examples are encoded and padded into a batch, the per-example log-likelihood that training,
Fisher, interpolation and evaluation all use, the scores prediction takes the argmax of, and
which tensors (if any) belong to one task rather than to the expert."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from pizoo.config import merge_options
from pizoo.errors import DataError, UsageError
from pizoo.inputs import get_input
from pizoo.inputs.image import pixel_batch

if TYPE_CHECKING:  # annotations only: the model layer imports this module (a cycle)
    from pizoo.models import ExpertModel


class Head:
    name: ClassVar[str]
    auto_class: ClassVar[str]  # the transformers Auto class the base model is loaded with
    peft_task_type: ClassVar[str]  # peft's TaskType for the tuners peft attaches
    per_task: ClassVar[bool] = False  # True: the head has tensors of its own, fixed to one label set
    reads_image_text: ClassVar[bool] = False  # reads an image and a text of one example together
    reads_candidates: ClassVar[bool] = False  # scores each example's own candidates (pizoo.candidates)
    summary: ClassVar[str] = ""

    # -- the zoo's head options (zoo.toml [head]) ----------------------------------------------
    def default_options(self, path: Path | None) -> dict[str, Any]:
        return {}

    def normalize_options(self, options: dict[str, Any], path: Path | None) -> dict[str, Any]:
        flags = {k: "--" + k.replace("_", "-") for k in options}
        return merge_options(self.default_options(path), options, f"the {self.name!r} head", flags)

    # -- loading -------------------------------------------------------------------------------
    def auto_class_for(self, config: dict[str, Any]) -> str:
        """The Auto class for this model (config.json as a dict): `auto_class` unless the head
        reads models of several kinds (classification: text or image)."""
        return self.auto_class

    def load_kwargs(self, labels: Sequence[str]) -> dict[str, Any]:
        return {}

    def task_module(self, hf: nn.Module) -> nn.Module | None:
        """The module whose parameters are the task's own (saved under "head.")."""
        return None

    def prepare(self, em: ExpertModel) -> None:
        """Check the labels against the model and cache what every batch needs."""

    # -- data ----------------------------------------------------------------------------------
    def encode(self, em: ExpertModel, ex, label_ids: Sequence[int]) -> list[dict]:
        raise NotImplementedError

    def collate(self, em: ExpertModel, rows: Sequence[dict], *, label: int | None = None, per_example: bool = False
                ) -> dict[str, Any]:
        """Pad rows into a batch. `label` overrides every row's label (scoring a candidate);
        `per_example` keeps every tensor the loss depends on separate per example (for the Fisher)."""
        raise NotImplementedError

    def row_length(self, row: dict) -> int:
        """The token positions an encoded row takes in a batch (scoring batches rows of like length):
        its input ids; 0 where it has none (an image)."""
        return len(row.get("input_ids", ()))

    def shorten(self, em: ExpertModel, row: dict, tokens: int) -> dict:
        """The row cut to at most `tokens` token positions as the tokenizer truncates (the longest
        text first, so a text pair keeps both texts; special tokens kept): the ranking's first
        heats score short rows. Unchanged where it fits or has no token ids (an image)."""
        ids = row.get("input_ids")
        if ids is None or len(ids) <= tokens or em.tokenizer is None:
            return row
        keep = kept_positions(em.tokenizer.get_special_tokens_mask(list(ids), already_has_special_tokens=True), tokens)
        return {k: ([v[i] for i in keep] if k in TOKEN_KEYS else v) for k, v in row.items()}

    def candidate_fields(self, em: ExpertModel, candidates: list[str]) -> dict[str, Any]:
        """What this head needs of one example's own candidates besides their texts (token ids)."""
        return {}

    # -- the forward ---------------------------------------------------------------------------
    def split_log_probs(self, em: ExpertModel, rows: Sequence[dict], aside) -> tuple[torch.Tensor, torch.Tensor,
                                                                       torch.Tensor] | None:
        """For the per-example Fisher, on `rows` collated as for training: log p(y_j | x_j) with the
        part every example shares (the label texts' embeddings) computed once, inside `aside()`:
        (log_probs, shared, leaf), `leaf` the detached copy of `shared` that log_probs reads. None,
        before collating anything, when these rows share nothing (they are then collated per example)."""
        return None

    def log_probs(self, em: ExpertModel, batch: dict[str, Any], params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """log p(y_j | x_j) of each example j of the batch."""
        raise NotImplementedError

    def scores(self, em: ExpertModel, batches: Sequence[Sequence[dict]], params: dict[str, torch.Tensor] | None
               ) -> torch.Tensor:
        """(N, L) scores of every label for every row of `batches` (the rows cut into batches by the
        caller, ExpertModel.class_scores), in their order, without gradients: prediction is the argmax.

        Default: the log-likelihood of each candidate label, one pass per label."""
        out = [torch.stack([self.log_probs(em, to_device(self.collate(em, chunk, label=c), em.device), params)
                            for c in range(len(em.labels))], dim=1).cpu() for chunk in batches]
        rows = [r for chunk in batches for r in chunk]
        scores = torch.cat(out) if out else torch.empty(0, len(em.labels))
        if rows and "candidates" in rows[0]:  # a position an example does not have is never its answer
            have = torch.tensor([len(r["candidates"]) for r in rows])
            scores = scores.masked_fill(torch.arange(scores.shape[1])[None, :] >= have[:, None], float("-inf"))
        return scores


class TextToTextHead(Head):
    """A head that renders the input into a prompt (the zoo's templates) and scores the label as
    the text the model writes: causal-lm, seq2seq."""

    templates: ClassVar[dict[str, str]]
    reads_candidates = True  # a candidate is an answer text like a label's

    def target_ids(self, em: ExpertModel, row: dict, label: int) -> list[int]:
        """The token ids of the answer `label` names for this row: its own candidate's, or the
        label's (a row lacking that candidate position scores its first, masked out in `scores`)."""
        if "candidate_ids" in row:
            own = row["candidate_ids"]
            return own[label] if label < len(own) else own[0]
        return label_ids(em)[label]

    def default_options(self, path):
        return dict(self.templates)

    def normalize_options(self, options, path):
        opts = super().normalize_options(options, path)
        if "{text}" not in opts["template"]:
            raise UsageError(f"--template {opts['template']!r} must contain {{text}}")
        return opts

    def prompts(self, em: ExpertModel, ex) -> list[str]:
        return get_input(ex.input_type).prompts(ex, em.head_options)


# -- helpers shared by heads ----------------------------------------------------------------------
def rendered_labels(em: ExpertModel, encode, decode) -> list[list[int]] | DataError:
    """render_labels, or the error to raise when a fixed label is needed: a candidate task's labels
    are its candidates' positions ("0", "1", ...), never written by the model."""
    try:
        return render_labels(em, encode, decode)
    except DataError as e:
        return e


def label_ids(em: ExpertModel) -> list[list[int]]:
    ids = em.cache["label_ids"]
    if isinstance(ids, DataError):
        raise ids
    return ids


def vision_only(config: dict[str, Any]) -> bool:
    """An image encoder with no text side (ViT, DINOv2, ...): no vocabulary, an image size."""
    return "vocab_size" not in config and "text_config" not in config and "image_size" in config



def wide(x: torch.Tensor) -> torch.Tensor:
    """At least float32 for log-probabilities (bf16/fp16 backbones); float64 stays float64."""
    return x if x.dtype == torch.float64 else x.float()


def to_device(batch: Any, device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask")  # one value per token


def kept_positions(special: Sequence[int], tokens: int) -> list[int]:
    """The positions of a token row (`special`: 1 at each special token) that truncation to `tokens`
    keeps: every special token, and the texts between them cut from their ends, the longest first
    (the first of equals: the tokenizer's longest_first strategy)."""
    texts: list[list[int]] = []
    for i, s in enumerate(special):
        if not s:
            if texts and texts[-1][-1] == i - 1:
                texts[-1].append(i)
            else:
                texts.append([i])
    for _ in range(len(special) - max(tokens, sum(special))):
        max(texts, key=len).pop()
    kept = {i for t in texts for i in t}
    return [i for i, s in enumerate(special) if s or i in kept]


def input_features(em: ExpertModel, ex) -> list[dict]:
    """What the processor makes of each example's input (input type by the examples' columns)."""
    return get_input(ex.input_type).features(em, ex)


def pad(em: ExpertModel, features: Sequence[dict]) -> dict[str, torch.Tensor]:
    """A batch of processor outputs: token ids padded by the tokenizer; images through the image
    processor, a batch at a time."""
    features = list(features)
    if features and "image" in features[0]:
        return pixel_batch(em, [f["image"] for f in features])
    return dict(em.tokenizer.pad(features, return_tensors="pt"))


def render_labels(em: ExpertModel, encode, decode) -> list[list[int]]:
    """Token ids of each label as the model writes it (`encode`); refuse a label the tokenizer
    cannot write back (`decode`)."""
    unk, out = em.tokenizer.unk_token_id, []
    for label in em.labels:
        ids = encode(label)
        text = decode(ids).strip()
        if not label.strip() or not ids or (unk is not None and unk in ids) or text != label.strip():
            raise DataError(f"label {label!r} cannot be rendered by the base model's tokenizer "
                            f"(it reads back as {text!r})", "rename the labels in the data to plain words")
        out.append(ids)
    return out


def pad_ids(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists: (ids, mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask
