"""Packages whose public names load on first use.

A package's `__init__` maps each public name to the submodule that holds it; importing the
package then costs nothing, so a decoder process that imports one submodule does not load
torch, and the command line reads its options without loading either stage.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, public: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports `public[name]` (relative) on first use."""

    def __getattr__(name: str) -> Any:
        if name not in public:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{public[name]}"), name)
        # Kept as the package's attribute: importing a submodule named like a function (the
        # package stages.train has both) binds the submodule there, and the next lookup would
        # find it instead of the function.
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
