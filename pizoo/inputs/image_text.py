"""An image and a text per example (does this caption fit this image? which answer fits this
question about it?). The `match` head on a dual encoder reads it: each label is rendered after the
example's text ("{text} {label}") through the text tower and scored against the image, so the
label space stays the shared one of label texts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pizoo.errors import UsageError
from pizoo.inputs import register
from pizoo.inputs.base import InputType
from pizoo.inputs.image import pixel_features

if TYPE_CHECKING:  # annotations only: importing the model layer here would load torch
    from pizoo.models import ExpertModel

COMPOSE = "{text} {label}"  # how a label text follows the example's text


@register
class ImageText(InputType):
    name = "image-text"
    template_key = "pair_template"
    reads = frozenset({"image", "text"})
    modality = "image"

    def columns(self, ex):
        return (ex.images, ex.texts)

    def features(self, em: ExpertModel, ex):
        if not em.head_type.reads_image_text:
            raise UsageError(f"the {em.head_type.name!r} head cannot read an image and a text together",
                             "make the zoo with the match head on a dual encoder (pizoo init --base-model "
                             "pizoo:multimodal)")
        return [{**f, "text": t} for f, t in zip(pixel_features(em, ex.images), ex.texts)]

    def prompt(self, template, image, text):
        raise UsageError("image-text tasks need the match head on a dual encoder")
