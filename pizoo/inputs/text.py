"""One text per example (sentiment, topic, ...)."""

from __future__ import annotations

from pizoo.inputs import register
from pizoo.inputs.base import InputType, tokenizer_of


@register
class Text(InputType):
    name = "text"
    template_key = "template"
    reads = frozenset({"text"})

    def columns(self, ex):
        return (ex.texts,)

    def features(self, em, ex):
        enc = tokenizer_of(em)(list(ex.texts), truncation=True, max_length=em.max_length)
        return [{k: enc[k][i] for k in enc} for i in range(len(ex))]

    def prompt(self, template, text):
        return template.format(text=text)
