"""One text per example (sentiment, topic, ...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pizoo.inputs import register
from pizoo.inputs.base import InputType, tokenizer_of

if TYPE_CHECKING:  # annotations only: importing the model layer here would load torch
    from pizoo.models import ExpertModel


@register
class Text(InputType):
    name = "text"
    template_key = "template"
    reads = frozenset({"text"})

    def columns(self, ex):
        return (ex.texts,)

    def features(self, em: ExpertModel, ex):
        enc = tokenizer_of(em)(list(ex.texts), truncation=True, max_length=em.max_length)
        return [{k: enc[k][i] for k in enc} for i in range(len(ex))]

    def prompt(self, template, text):
        return template.format(text=text)
