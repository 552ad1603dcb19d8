"""`causal-lm`: a decoder reads the prompt and the label is the answer text; log p(y|x) sums the
log-probabilities of the answer's tokens. One output space (the vocabulary) for every task."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pizoo.heads import register
from pizoo.heads.base import TextToTextHead, rendered_labels, wide

if TYPE_CHECKING:  # annotations only: the model layer imports this module (a cycle)
    from pizoo.models import ExpertModel

DEFAULT_TEMPLATE = "{text}\nAnswer:"
DEFAULT_PAIR_TEMPLATE = "{text}\n{text_pair}\nAnswer:"


@register
class CausalLM(TextToTextHead):
    name = "causal-lm"
    auto_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    summary = "a decoder writes the label text as its answer (shared vocabulary)"
    templates = {"template": DEFAULT_TEMPLATE, "pair_template": DEFAULT_PAIR_TEMPLATE}

    def prepare(self, em: ExpertModel):
        tok = em.tokenizer
        em.cache["label_ids"] = rendered_labels(em, lambda label: tok(" " + label, add_special_tokens=False)["input_ids"],
                                                tok.decode)

    def encode(self, em: ExpertModel, ex, label_ids):
        tok = em.tokenizer
        ids = em.cache["label_ids"]  # the candidates' length is minded in collate
        budget = max(8, em.max_length - (0 if isinstance(ids, Exception) else max(len(i) for i in ids)))
        rows = []
        for prompt, y in zip(self.prompts(em, ex), label_ids):
            rows.append({"prompt_ids": keep_end(tok, tok(prompt)["input_ids"], budget), "label": int(y)})
        return rows

    def shorten(self, em: ExpertModel, row, tokens):
        return {**row, "prompt_ids": keep_end(em.tokenizer, row["prompt_ids"], max(2, tokens))}

    def row_length(self, row: dict) -> int:
        return len(row["prompt_ids"])  # the answer's tokens follow it in collate

    def candidate_fields(self, em: ExpertModel, candidates):
        tok = em.tokenizer
        return {"candidate_ids": [tok(" " + c, add_special_tokens=False)["input_ids"] for c in candidates]}

    def collate(self, em: ExpertModel, rows, *, label=None, per_example=False):
        labels = torch.tensor([r["label"] if label is None else label for r in rows])
        seqs, masks = [], []
        for r, lab in zip(rows, labels.tolist()):
            target = self.target_ids(em, r, lab)
            prompt = r["prompt_ids"]
            room = max(1, em.max_length - len(target))
            if len(prompt) > room:  # a long candidate: keep the end of the prompt, where it asks
                prompt = prompt[-room:]
            seqs.append(prompt + target)
            masks.append([0] * len(prompt) + [1] * len(target))
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), em.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        tmask = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, (s, m) in enumerate(zip(seqs, masks)):
            ids[i, : len(s)] = torch.tensor(s)
            attn[i, : len(s)] = 1
            tmask[i, : len(s)] = torch.tensor(m, dtype=torch.bool)
        return {"inputs": {"input_ids": ids, "attention_mask": attn}, "target_mask": tmask, "labels": labels}

    def log_probs(self, em: ExpertModel, batch, params=None):
        logits = em.forward(batch["inputs"], params).logits
        logits = logits[:, em.prefix:]  # virtual tokens predict nothing we score
        sel = batch["target_mask"][:, 1:]
        picked = wide(logits[:, :-1][sel]).log_softmax(-1)
        tokens = batch["inputs"]["input_ids"][:, 1:][sel]
        lp = picked.gather(1, tokens[:, None]).squeeze(1)
        rows = sel.nonzero()[:, 0]
        return torch.zeros(batch["labels"].shape[0], device=lp.device, dtype=lp.dtype).index_add(0, rows, lp)


def keep_end(tok, ids: list[int], budget: int) -> list[int]:
    """A prompt's ids cut to `budget`: the end, where the template asks for the answer (and the
    beginning-of-sequence token, where it has one)."""
    if len(ids) <= budget:
        return ids
    bos = tok.bos_token_id
    return ([bos] if bos is not None and ids[0] == bos else []) + ids[-(budget - 1):]
