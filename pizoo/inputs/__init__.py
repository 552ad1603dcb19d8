"""The registry of input types: what a task's input columns hold and how the processor reads them.

One module per type, one `register` line each. An input type turns examples into the features
the backbone's forward takes (for encoder-style heads) or into a prompt string (for generative
heads, through the zoo's templates)."""

from __future__ import annotations

from pizoo.errors import UsageError
from pizoo.inputs.base import InputType
from pizoo.registry import Registry

INPUTS: Registry[InputType] = Registry("input type", "input type")
register = INPUTS.register
get_input = INPUTS.get_one


def input_type_for(columns) -> str:
    """The registered input type of examples with these columns (names of text, text_pair, image,
    boxes that are present): the one answer to "what does this task read?"."""
    present = frozenset(columns)
    for name, kind in INPUTS.items():
        if kind.reads == present:
            return name
    raise UsageError(f"no input type reads the columns {sorted(present)}", "pizoo add-task --help")


from pizoo.inputs import image, image_text, regions, text, text_pair  # noqa: E402,F401  (each registers itself)
