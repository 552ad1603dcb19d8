"""The registry of input types: what a task's input columns hold and how the processor reads them.

One module per type, one `register` line each. An input type turns examples into the features
the backbone's forward takes (for encoder-style heads) or into a prompt string (for generative
heads, through the zoo's templates)."""

from __future__ import annotations

from pizoo.errors import UsageError
from pizoo.inputs.base import InputType

INPUTS: dict[str, InputType] = {}


def register(cls: type[InputType]) -> type[InputType]:
    INPUTS[cls.name] = cls()
    return cls


def get_input(name: str) -> InputType:
    try:
        return INPUTS[name]
    except KeyError:
        raise UsageError(f"input type {name!r} is not known; choose one of {', '.join(sorted(INPUTS))}")


from pizoo.inputs import text, text_pair  # noqa: E402,F401  (each registers itself)
