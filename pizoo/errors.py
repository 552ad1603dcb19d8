"""Typed errors. The library raises them; the CLI turns each into one line plus the fix."""

from __future__ import annotations


class PizooError(Exception):
    """A user-facing error: `message` says what is wrong, `hint` the command that fixes it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (fix: {self.hint})"


class NotAZoo(PizooError):
    """The folder has no (readable) zoo.toml."""


class ZooExists(PizooError):
    """init on a folder that already is a zoo."""


class SchemaError(PizooError):
    """A file written by another (newer) pizoo, or not by pizoo at all."""


class InvalidName(PizooError):
    """A task name that is not a safe identifier."""


class TaskNotFound(PizooError):
    pass


class TaskExists(PizooError):
    pass


class IncompatibleExperts(PizooError):
    """Experts or embeddings from another base model or expert spec."""


class CorruptFile(PizooError):
    """A file that is missing, truncated or not what its manifest says."""


class DataError(PizooError):
    """Task data that cannot be used: missing columns, empty, one class, ..."""


class ModelError(PizooError):
    """The base model cannot be found or loaded."""


class TrainingError(PizooError):
    """Training diverged (NaN loss) or could not run."""


class MissingEmbedding(PizooError):
    """A task without a Fisher embedding."""


class ExportError(PizooError):
    pass


class UsageError(PizooError):
    """Options that contradict each other; reported with exit code 2 like click's own."""

    exit_code = 2
