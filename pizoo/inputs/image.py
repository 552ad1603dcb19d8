"""One image per example (image classification): the model's image processor reads it.

Data gives an image as a file path (relative to the data file), encoded bytes, a `datasets` Image
value ({"bytes", "path"}) or a PIL image. `read_image` checks that it decodes and returns the
encoded bytes, which the task folder keeps: a zoo never points at image files."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pizoo.errors import DataError, ModelError, UsageError
from pizoo.inputs import register
from pizoo.inputs.base import InputType

if TYPE_CHECKING:  # annotations only: importing the model layer here would load torch
    from pizoo.models import ExpertModel

IMAGE_HINT = "check the image column: file paths relative to the data file, or image bytes"


def read_image(value: Any, base_dir: Path | None, where: str) -> bytes:
    """Encoded bytes of one image, checked to decode; a clear error naming the row otherwise."""
    if isinstance(value, dict):  # a datasets Image value, undecoded
        value = value.get("bytes") or value.get("path")
    if hasattr(value, "save") and hasattr(value, "mode"):  # a decoded PIL image
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        what = "its image bytes"
    elif isinstance(value, str) and value.strip():
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if path.is_dir():
            raise DataError(f"{where}: {path} is a folder, not an image file", IMAGE_HINT)
        if not path.is_file():
            raise DataError(f"{where}: image file {path} does not exist", IMAGE_HINT)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"{where}: cannot read image file {path} ({e.strerror or e})", IMAGE_HINT) from e
        what = f"image file {path}"
    else:
        raise DataError(f"{where}: the image column holds {type(value).__name__} {str(value)[:40]!r}, "
                        "not an image", IMAGE_HINT)
    try:
        decode(data)
    except DataError as e:
        raise DataError(f"{where}: {what} is not a readable image ({e.message})", IMAGE_HINT) from e
    return data


MAX_PIXELS = 89_478_485  # PIL's own limit (Image.MAX_IMAGE_PIXELS); models read a few hundred pixels a side


def decode(data: bytes):
    """An RGB PIL image from encoded bytes."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size  # read from the header: refuse before decoding what could fill the memory
            if w * h > MAX_PIXELS:
                raise DataError(f"an image of {w}x{h} pixels ({w * h / 1e6:.0f} megapixels) is more than "
                                f"{MAX_PIXELS / 1e6:.0f} megapixels: not a task image (or a decompression bomb)")
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{type(e).__name__}: {str(e)[:120]}") from e


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image, from its header."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.size


def pixel_features(em: ExpertModel, images: list[bytes]) -> list[dict]:
    """Rows that hold each image as its encoded bytes ({"image": bytes}); `pixel_batch` runs the
    model's image processor on a batch of them when the batch is made, so a task's pixels exist
    one batch at a time (10,000 images at 224 px would be 6 GB as tensors, and are ~10 MB as PNG)."""
    if em.image_processor is None:
        raise ModelError(f"the base model {em.spec.base_model} has no image processor, so it cannot read images",
                         "make the zoo on a model with an image side (a CLIP-style dual encoder: pizoo init "
                         "--base-model ...)")
    return [{"image": b} for b in images]


def pixel_batch(em: ExpertModel, images: list[bytes]) -> dict:
    """What the model's image processor makes of a batch of images: {"pixel_values": (B, C, H, W)}."""
    return {"pixel_values": em.image_processor(images=[decode(b) for b in images], return_tensors="pt")["pixel_values"]}


@register
class Image(InputType):
    name = "image"
    template_key = "template"
    modality = "image"
    reads = frozenset({"image"})

    def columns(self, ex):
        return (ex.images,)

    def features(self, em: ExpertModel, ex):
        return pixel_features(em, ex.images)

    def prompt(self, template, image):
        raise UsageError("image tasks need a head with an image side: the match head on a dual encoder",
                         "pizoo init --head match --base-model a CLIP-style model")
