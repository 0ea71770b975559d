"""Packages whose public names load on first use.

A package's `__init__` maps each public name to the submodule that holds it; importing the
package then costs nothing, so a decoder process that imports one submodule does not load
torch, and the command line reads its options without loading either stage.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def long_lived() -> Iterator[None]:
    """A block whose objects live as long as the process, such as importing torch: no cyclic
    garbage collection while it runs, and what exists at its end kept out of every later
    collection (gc.freeze).

    torch and torchvision make about 340,000 objects as they load, none of them garbage; the
    collector scanning them again and again while they load, and once more as the interpreter
    exits, cost a command 1.5 s (docs/bench.md, "Figures behind the code"). Only for processes
    of our own (the command line, the stages' lazy imports): a garbage cycle alive at the
    freeze is never collected.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def lazy_exports(package: str, public: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package` that imports `public[name]` (relative) on first use."""

    def __getattr__(name: str) -> Any:
        if name not in public:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        with long_lived():  # a stage's import: torchvision, the model libraries
            value = getattr(importlib.import_module(f"{package}.{public[name]}"), name)
        # Kept as the package's attribute: importing a submodule named like a function (the
        # package stages.train has both) binds the submodule there, and the next lookup would
        # find it instead of the function.
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
