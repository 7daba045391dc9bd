"""Modules imported on first use, so a process loads only the libraries its work needs.

The web process serves most requests without Pillow or firebase-admin's token code being
touched at import; each is loaded by the first call that uses it (issue 17, memory). A
proxy stands where `from PIL import Image` would have bound the module: an attribute read
imports the module once (later reads find it in `sys.modules`) and returns its attribute.
Type checkers see the real import (`if TYPE_CHECKING:`).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module `name` until an attribute is read."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded"
        return f"<lazy module {self._name!r} ({state})>"


def lazy(*names: str) -> tuple[Any, ...]:
    """One `LazyModule` per dotted module name."""
    return tuple(LazyModule(name) for name in names)
