"""Referring expressions: an image, an expression and candidate boxes in the image; the answer is
the box the expression names (RefCOCO, RefCOCO+, RefCOCOg). The `match` head on a dual encoder
reads it: the expression goes through the text tower, each candidate box through the image tower
as its region of the image, and log p(gold | x) is the log-softmax of their scaled cosines over
that example's boxes, so a box is a candidate as an answer text is.

A region is seen one of two ways (the zoo's `region` head option; ReCLIP, Subramanian et al. 2022,
found both useful): `crop`, the box cut out and padded square, or `blur`, the whole image with
everything outside the box blurred (the context stays visible, the object stands out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pizoo.errors import UsageError
from pizoo.inputs import register
from pizoo.inputs.base import InputType, tokenizer_of
from pizoo.inputs.image import decode

if TYPE_CHECKING:  # annotations only: importing the model layer here would load torch
    from pizoo.models import ExpertModel

REGIONS = ("crop", "blur")
BLUR = 0.08  # the blur's radius, as a fraction of the image's longer side
GREY = (128, 128, 128)


@register
class Regions(InputType):
    name = "regions"
    template_key = "template"
    reads = frozenset({"image", "text", "boxes"})
    modality = "image"

    def columns(self, ex):
        return (ex.images, ex.texts, ex.boxes)

    def features(self, em: ExpertModel, ex):
        if not em.head_type.reads_image_text:
            raise UsageError(f"the {em.head_type.name!r} head cannot score regions of an image against an expression",
                             "make the zoo with the match head on a dual encoder (pizoo init --base-model "
                             "pizoo:multimodal)")
        enc = tokenizer_of(em)(list(ex.texts), truncation=True, max_length=em.max_length)
        return [{**{k: enc[k][i] for k in enc}, "region_image": img} for i, img in enumerate(ex.images)]

    def prompt(self, template, image, text, boxes):
        raise UsageError("referring-expression tasks need the match head on a dual encoder")


def square(img, fill=GREY):
    """The image padded (centred) to a square, so that an image processor's centre crop keeps it whole."""
    from PIL import Image

    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new("RGB", (side, side), fill)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def region(img, box: Sequence[float], how: str):
    """One candidate box of a decoded image as the image tower sees it."""
    from PIL import ImageFilter

    x, y, w, h = box
    left, top = max(0, round(x)), max(0, round(y))
    right, bottom = min(img.size[0], max(left + 1, round(x + w))), min(img.size[1], max(top + 1, round(y + h)))
    if how == "crop":
        return square(img.crop((left, top, right, bottom)))
    if how == "blur":
        out = img.filter(ImageFilter.GaussianBlur(radius=max(1.0, BLUR * max(img.size))))
        out.paste(img.crop((left, top, right, bottom)), (left, top))
        return square(out)
    raise UsageError(f"region {how!r} is not one of {', '.join(REGIONS)}")


def region_batch(em: ExpertModel, images: Sequence[bytes], owner: Sequence[int], boxes: Sequence[Sequence[float]], how: str
                 ) -> dict:
    """The image processor's pixels of every candidate region of a batch: row `owner[i]`'s image,
    box `boxes[i]`. Each image is decoded once."""
    decoded = {o: decode(images[o]) for o in set(owner)}
    crops = [region(decoded[o], b, how) for o, b in zip(owner, boxes)]
    return {"pixel_values": em.image_processor(images=crops, return_tensors="pt")["pixel_values"]}
