"""`match`: one output space for every task. Each label is a text; the score of label y for input x
is a scaled cosine between the pooled embedding of x and the pooled embedding of y's text, both
through the same expert-adapted encoder. No per-task tensors: any expert scores any task.

Pooling follows how the encoder was trained: a sentence-transformers folder says so in
1_Pooling/config.json (mean pooling for all-MiniLM-L6-v2); a CLIP-style model pools as it was
trained (its pooler: the end-of-text token); otherwise mean pooling.

On a dual encoder (CLIP, SigLIP, a VisionTextDualEncoderModel: a model with a `text_model` and a
`vision_model`) texts go through the text tower and images through the vision tower, each into the
shared space through its projection: an image task scores its images against its label texts as
a text task scores its texts, so image and text tasks share one label space and one expert.

For the per-example Fisher every example gets its own copy of the label texts (`per_example`):
a label embedding shared by the batch would mix the examples' gradients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from pizoo.basemodel import is_dual
from pizoo.candidates import ragged, spread
from pizoo.errors import ModelError, UsageError
from pizoo.heads import register
from pizoo.heads.base import Head, input_features, pad, to_device, wide
from pizoo.inputs.image_text import COMPOSE
from pizoo.inputs.regions import REGIONS, region_batch

if TYPE_CHECKING:  # annotations only: the model layer imports this module (a cycle)
    from pizoo.models import ExpertModel

POOLINGS = ("mean", "cls", "pooler")
POOLER_MODELS = ("clip", "siglip")  # text towers trained on their pooler output
DEFAULT_SCALE = 20.0  # sentence-transformers' contrastive scale: cosines in [-1, 1] become usable logits
LABEL_BATCH = 64  # label texts embedded at once when scoring
DEFAULT_REGION = "crop"  # how the image tower sees a candidate box (pizoo.inputs.regions)


def pooling_of(path: Path | None) -> str:
    """The pooling a sentence-transformers folder declares; mean when nothing says otherwise."""
    cfg = (path / "1_Pooling" / "config.json") if path else None
    if path is not None and not (cfg and cfg.is_file()) and (path / "config.json").is_file():
        try:
            if json.loads((path / "config.json").read_text()).get("model_type") in POOLER_MODELS:
                return "pooler"
        except (OSError, json.JSONDecodeError):
            pass
    if cfg is not None and cfg.is_file():
        try:
            doc = json.loads(cfg.read_text())
        except (OSError, json.JSONDecodeError):
            return "mean"
        if doc.get("pooling_mode_cls_token") and not doc.get("pooling_mode_mean_tokens"):
            return "cls"
    return "mean"


@register
class Match(Head):
    name = "match"
    auto_class = "AutoModel"
    peft_task_type = "FEATURE_EXTRACTION"
    summary = "scaled cosine between the input and each label text, one encoder (shared label space)"
    reads_image_text = True
    reads_candidates = True

    def default_options(self, path):
        return {"pooling": pooling_of(path), "scale": DEFAULT_SCALE, "region": DEFAULT_REGION}

    def normalize_options(self, options, path):
        opts = super().normalize_options(options, path)
        if opts["pooling"] not in POOLINGS:
            raise UsageError(f"--pooling {opts['pooling']!r} is not one of {', '.join(POOLINGS)}")
        if not isinstance(opts["scale"], (int, float)) or not opts["scale"] > 0:
            raise UsageError(f"--scale must be a positive number, got {opts['scale']!r}")
        opts["scale"] = float(opts["scale"])
        if opts["region"] not in REGIONS:
            raise UsageError(f"--region {opts['region']!r} is not one of {', '.join(REGIONS)}")
        return opts

    def encode(self, em: ExpertModel, ex, label_ids):
        return [{**f, "label": int(y)} for f, y in zip(input_features(em, ex), label_ids)]

    def collate(self, em: ExpertModel, rows, *, label=None, per_example=False):
        labels = torch.tensor([r["label"] if label is None else label for r in rows])
        inputs = pad(em, [{k: v for k, v in r.items() if k not in ("label", "text", "candidates", "region_image")}
                          for r in rows])
        feats = em.cache["label_features"]
        batch = {"inputs": inputs, "labels": labels}
        if rows and "region_image" in rows[0]:  # referring expressions: each candidate box's region of the image
            flat, owner, slot = ragged(rows)
            batch["label_inputs"] = region_batch(em, [r["region_image"] for r in rows], owner.tolist(), flat,
                                                 em.head_options.get("region", DEFAULT_REGION))
            batch["label_owner"], batch["label_slot"] = owner, slot
        elif rows and "candidates" in rows[0]:  # each example's own candidates (after its text, for image-text)
            flat, owner, slot = ragged(rows)
            texts = ([COMPOSE.format(text=rows[o]["text"], label=c) for c, o in zip(flat, owner.tolist())]
                     if "text" in rows[0] else flat)
            batch["label_inputs"] = dict(em.tokenizer(texts, truncation=True, max_length=em.max_length,
                                                      padding=True, return_tensors="pt"))
            batch["label_owner"], batch["label_slot"] = owner, slot
        elif rows and "text" in rows[0]:  # image-text: each example's own label texts, after its text
            texts = [COMPOSE.format(text=r["text"], label=y) for r in rows for y in em.labels]
            batch["label_inputs"] = dict(em.tokenizer(texts, truncation=True, max_length=em.max_length,
                                                      padding=True, return_tensors="pt"))
            batch["label_owner"] = torch.arange(len(rows)).repeat_interleave(len(em.labels))
        elif per_example:
            batch["label_inputs"] = pad(em, feats * len(rows))
            batch["label_owner"] = torch.arange(len(rows)).repeat_interleave(len(feats))
        else:
            batch["label_inputs"] = pad(em, feats)
        return batch

    def prepare(self, em: ExpertModel):
        if em.image_processor is not None and not is_dual(em.hf):
            raise ModelError(f"the base model {em.spec.base_model} has an image processor but no text and vision "
                             "towers: the match head needs both to score images against label texts",
                             "use a dual encoder (CLIP-style), or --head classification")
        enc = em.tokenizer(list(em.labels), truncation=True, max_length=em.max_length)
        em.cache["label_features"] = [{k: enc[k][i] for k in enc} for i in range(len(em.labels))]

    def embed(self, em: ExpertModel, inputs, params, owner=None):
        if not is_dual(em.hf):
            return self.pool(em, em.forward(inputs, params, owner=owner), inputs)
        hf = em.hf
        if "pixel_values" in inputs:
            def run(kw):
                out = hf.vision_model(pixel_values=kw["pixel_values"])
                pooled = out.pooler_output if out.pooler_output is not None else out.last_hidden_state[:, 0]
                proj = getattr(hf, "visual_projection", None)
                return wide(proj(pooled) if proj is not None else pooled)
        else:
            def run(kw):
                pooled = self.pool(em, hf.text_model(**kw), kw)
                proj = getattr(hf, "text_projection", None)
                return wide(proj(pooled.to(proj.weight.dtype))) if proj is not None else pooled
        return em.forward(inputs, params, owner=owner, via=run)

    def pool(self, em: ExpertModel, out, inputs):
        """One vector per row of the backbone's output, pooled as the model was trained."""
        how = em.head_options["pooling"]
        if how == "pooler" and getattr(out, "pooler_output", None) is not None:
            return wide(out.pooler_output)
        hidden = wide(out.last_hidden_state[:, em.prefix:])
        if how == "cls":
            return hidden[:, 0]
        mask = inputs["attention_mask"][:, :, None].to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def label_scores(self, em: ExpertModel, batch, params):
        x = self.embed(em, batch["inputs"], params)
        return self._scores(em, x, self.embed(em, batch["label_inputs"], params, batch.get("label_owner")), batch)

    def _scores(self, em: ExpertModel, x, y, batch):
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
        if "label_slot" in batch:  # ragged: each example against its own candidates, -inf elsewhere
            owner = batch["label_owner"].to(x.device)
            sims = (x[owner] * y).sum(-1)
            return spread(em.head_options["scale"] * sims, owner, batch["label_slot"], x.shape[0], len(em.labels))
        if "label_owner" in batch:  # (B·L, H) -> (B, L, H): each example against its own copies
            sims = torch.einsum("bh,blh->bl", x, y.view(x.shape[0], -1, y.shape[-1]))
        else:
            sims = x @ y.T
        return em.head_options["scale"] * sims

    def log_probs(self, em: ExpertModel, batch, params=None):
        return _gold(self.label_scores(em, batch, params), batch)

    def split_log_probs(self, em: ExpertModel, rows, aside):
        if "text" in rows[0] or "candidates" in rows[0]:  # each example reads its own label texts
            return None
        batch = to_device(self.collate(em, rows), em.device)
        x = self.embed(em, batch["inputs"], None)
        with aside():
            y = self.embed(em, batch["label_inputs"], None)
        leaf = y.detach().requires_grad_()
        return _gold(self._scores(em, x, leaf, batch), batch), y, leaf

    def scores(self, em: ExpertModel, batches, params):
        if not any(batches):
            return torch.empty(0, len(em.labels))
        if "text" in batches[0][0] or "candidates" in batches[0][0]:  # label texts differ per example
            return torch.cat([self.label_scores(em, to_device(self.collate(em, chunk), em.device), params).cpu()
                              for chunk in batches])
        feats = em.cache["label_features"]  # the label texts, embedded once for every batch
        y = torch.cat([self.embed(em, to_device(pad(em, feats[i: i + LABEL_BATCH]), em.device), params)
                       for i in range(0, len(feats), LABEL_BATCH)])
        y = F.normalize(y, dim=-1)
        out = []
        for chunk in batches:
            x = F.normalize(self.embed(em, to_device(self.collate(em, chunk), em.device)["inputs"], params), dim=-1)
            out.append((em.head_options["scale"] * x @ y.T).cpu())
        return torch.cat(out)


def _gold(scores: torch.Tensor, batch) -> torch.Tensor:
    return scores.log_softmax(-1).gather(1, batch["labels"][:, None]).squeeze(1)
