"""One registry type for the plug-ins (expert kinds, heads, input types): a name -> instance map
filled by a `register` decorator, one line per plug-in module."""

from __future__ import annotations

from typing import Generic, TypeVar

from pizoo.errors import UsageError

T = TypeVar("T")


class Registry(dict, Generic[T]):
    def __init__(self, what: str, flag: str):
        super().__init__()
        self.what, self.flag = what, flag

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: register one instance under the class's `name`."""
        self[cls.name] = cls()
        return cls

    def get_one(self, name: str) -> T:
        try:
            return self[name]
        except KeyError:
            raise UsageError(f"{self.flag} {name!r} is not a known {self.what}; choose one of "
                             f"{', '.join(sorted(self))}") from None
