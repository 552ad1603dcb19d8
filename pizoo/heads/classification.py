"""`classification`: a fresh linear layer per task over the pooled output (transformers'
*ForSequenceClassification, or *ForImageClassification on an image encoder alone: ViT, DINOv2). Each task has its own output space: fine for one task, but an expert
means little to a task with other labels, so this head cuts transfer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pizoo.errors import ModelError
from pizoo.heads import register
from pizoo.heads.base import Head, input_features, pad, to_device, vision_only, wide

if TYPE_CHECKING:  # annotations only: the model layer imports this module (a cycle)
    from pizoo.models import ExpertModel


@register
class Classification(Head):
    name = "classification"
    auto_class = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    per_task = True
    summary = "a per-task linear layer over the label set (no transfer across label sets)"

    def auto_class_for(self, config):
        return "AutoModelForImageClassification" if vision_only(config) else self.auto_class

    def load_kwargs(self, labels):
        return {"num_labels": max(2, len(labels))}  # no labels: init's structural check

    def task_module(self, hf):
        for attr in ("classifier", "score"):
            module = getattr(hf, attr, None)
            if module is not None:
                # peft wraps the head it trains in a ModulesToSaveWrapper; the copy it trains is the head.
                inner = getattr(module, "modules_to_save", None)
                return inner["default"] if inner is not None else module
        raise ModelError(f"{type(hf).__name__} has no classification head ('classifier' or 'score')")

    def encode(self, em: ExpertModel, ex, label_ids):
        return [{**f, "label": int(y)} for f, y in zip(input_features(em, ex), label_ids)]

    def collate(self, em: ExpertModel, rows, *, label=None, per_example=False):
        labels = torch.tensor([r["label"] if label is None else label for r in rows])
        return {"inputs": pad(em, [{k: v for k, v in r.items() if k != "label"} for r in rows]), "labels": labels}

    def log_probs(self, em: ExpertModel, batch, params=None):
        logits = em.forward(batch["inputs"], params).logits
        return wide(logits).log_softmax(-1).gather(1, batch["labels"][:, None]).squeeze(1)

    def scores(self, em: ExpertModel, batches, params):
        out = [em.forward(to_device(self.collate(em, chunk), em.device)["inputs"], params).logits.float().cpu()
               for chunk in batches]
        return torch.cat(out) if out else torch.empty(0, len(em.labels))
