"""Two texts per example (entailment, paraphrase, question + passage): the tokenizer's pair encoding."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pizoo.inputs import register
from pizoo.inputs.base import InputType, tokenizer_of

if TYPE_CHECKING:  # annotations only: importing the model layer here would load torch
    from pizoo.models import ExpertModel


@register
class TextPair(InputType):
    name = "text-pair"
    template_key = "pair_template"
    reads = frozenset({"text", "text_pair"})

    def columns(self, ex):
        return (ex.texts, ex.pairs)

    def features(self, em: ExpertModel, ex):
        enc = tokenizer_of(em)(list(ex.texts), list(ex.pairs), truncation=True, max_length=em.max_length)
        return [{k: enc[k][i] for k in enc} for i in range(len(ex))]

    def prompt(self, template, text, text_pair):
        return template.format(text=text, text_pair=text_pair)
