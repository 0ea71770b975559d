"""Stage one's model families behind one interface (base.py); `family_for(cfg)` picks one.

Each module here holds one family and registers it (families.py's `@register(Family(...))`):
how its option value is written, its default batch, its help and what it stores.
Importing this package imports every module in it, so a new family is one new module;
`vidstore backbones` lists the --backbone families, and docs/architecture.md's table of
modules is generated from the registry (family_listing.module_table).

image_model.py holds what the library families share, hub.py where their published files are,
sound_windows.py what the sound families share.
"""

from __future__ import annotations

import importlib
import pkgutil

from pipeline.errors import ConfigError

from .. import families
from ..config import ExtractConfig
from .base import CLIPS, FRAMES, SOUND, Extractor, Loaded, Preprocessing

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")  # each family module registers itself


def family_for(cfg: ExtractConfig) -> Extractor:
    """The family that computes the features of `cfg`'s feature set (its library checks the name)."""
    option = "audio_features" if cfg.modality == "audio" else "backbone"
    cls = families.family_named(option, getattr(cfg, option)).extractor
    if not isinstance(cls, type) or not issubclass(cls, Extractor):
        raise ConfigError(f"the {getattr(cfg, option)} family has no extractor in this version")
    return cls(cfg)


def family_class(name: str) -> type[Extractor]:
    """A registered family's Extractor subclass, by its registry name (e.g. "vggish")."""
    return families.REGISTRY[name].extractor


__all__ = ["CLIPS", "FRAMES", "SOUND", "Extractor", "Loaded", "Preprocessing", "family_class", "family_for"]
