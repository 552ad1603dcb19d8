"""`seq2seq`: an encoder-decoder (T5, Flan-T5, BART) reads every task as text-to-text, the
π-Tuning paper's own interface (OFA): the encoder reads the prompt, the decoder writes the label
text, and log p(y|x) sums the log-probabilities of its tokens (end-of-sequence included)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pizoo.heads import register
from pizoo.heads.base import TextToTextHead, pad_ids, rendered_labels, wide

if TYPE_CHECKING:  # annotations only: the model layer imports this module (a cycle)
    from pizoo.models import ExpertModel


@register
class Seq2Seq(TextToTextHead):
    name = "seq2seq"
    auto_class = "AutoModelForSeq2SeqLM"
    peft_task_type = "SEQ_2_SEQ_LM"
    summary = "an encoder-decoder writes the label text (text-to-text, the paper's interface)"
    templates = {"template": "{text}", "pair_template": "{text}\n{text_pair}"}

    def prepare(self, em: ExpertModel):
        tok = em.tokenizer  # it appends </s>: the label ends where the model says so
        em.cache["label_ids"] = rendered_labels(em, lambda label: tok(label)["input_ids"],
                                                lambda ids: tok.decode(ids, skip_special_tokens=True))
        start = em.hf.config.decoder_start_token_id
        em.cache["start"] = start if start is not None else em.tokenizer.pad_token_id

    def encode(self, em: ExpertModel, ex, label_ids):
        enc = em.tokenizer(self.prompts(em, ex), truncation=True, max_length=em.max_length)
        return [{"input_ids": enc["input_ids"][i], "label": int(y)} for i, y in enumerate(label_ids)]

    def candidate_fields(self, em: ExpertModel, candidates):
        return {"candidate_ids": [em.tokenizer(c, truncation=True, max_length=em.max_length)["input_ids"]
                                  for c in candidates]}

    def collate(self, em: ExpertModel, rows, *, label=None, per_example=False):
        labels = torch.tensor([r["label"] if label is None else label for r in rows])
        ids, attn = pad_ids([r["input_ids"] for r in rows], em.tokenizer.pad_token_id)
        targets = [self.target_ids(em, r, y) for r, y in zip(rows, labels.tolist())]
        dec, dmask = pad_ids([[em.cache["start"]] + t[:-1] for t in targets], em.tokenizer.pad_token_id)
        tgt, _ = pad_ids(targets, em.tokenizer.pad_token_id)
        return {"inputs": {"input_ids": ids, "attention_mask": attn, "decoder_input_ids": dec,
                           "decoder_attention_mask": dmask},
                "target_ids": tgt, "target_mask": dmask.bool(), "labels": labels}

    def log_probs(self, em: ExpertModel, batch, params=None):
        logits = wide(em.forward(batch["inputs"], params).logits)
        lp = logits.log_softmax(-1).gather(2, batch["target_ids"][..., None]).squeeze(2)
        return (lp * batch["target_mask"]).sum(1)
