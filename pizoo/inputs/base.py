"""The contract every input type fulfils."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pizoo.errors import ModelError

if TYPE_CHECKING:  # annotations only: importing the model layer here would load torch
    from pizoo.models import ExpertModel


def tokenizer_of(em: ExpertModel):
    """The model's tokenizer; a clear error for an image encoder alone."""
    if em.tokenizer is None:
        raise ModelError(f"the base model {em.spec.base_model} has no tokenizer, so it cannot read text",
                         "make the zoo on a model with a text side (pizoo init --base-model pizoo:multimodal)")
    return em.tokenizer


class InputType:
    """What one example's input is, and how the base model's processor reads it.

    `features` gives the keyword arguments of the backbone's forward for each example (whatever
    the processor returns: input_ids, attention_mask, token_type_ids, pixel_values, ...);
    `modality` says which side of a dual encoder reads them ("text" or "image");
    `prompt` renders the example into the zoo's prompt template for generative heads."""

    name: ClassVar[str]
    template_key: ClassVar[str]  # which of the head's templates renders this input
    modality: ClassVar[str] = "text"
    # the data columns an example of this type has (of text, text_pair, image): how the type is known
    reads: ClassVar[frozenset[str]]

    def columns(self, ex) -> tuple[Sequence[Any], ...]:
        raise NotImplementedError

    def features(self, em: ExpertModel, ex) -> list[dict]:
        """One dict per example of what the model's processor makes of it (em.tokenizer,
        em.image_processor, em.max_length)."""
        raise NotImplementedError

    def prompt(self, template: str, *values: Any) -> str:
        raise NotImplementedError

    def prompts(self, ex, templates: dict[str, str]) -> list[str]:
        template = templates[self.template_key]
        return [self.prompt(template, *vals) for vals in zip(*self.columns(ex))]
