"""The registry of stage one's model families: one `Family` record per family, written in the
family's own module, and everything that names families reads it from here.

A family module in extractors/ registers its `Extractor` subclass with a decorator, as
timm's model modules do with `@register_model`:

    @register(Family(name="timm", title="timm", form="timm:NAME[.TAG]", examples=(...), ...))
    class TimmImage(ImageModel): ...

The record says how the option value is written (`form`, `examples`, the name `check`), the
family's default batch per device, its one-line help, and what it stores (per frame, per
clip or per sound window; D). Config validation, `--backbone`'s help, `vidstore backbones`,
`make bench`, gpu-check and the docs' family tables (family_listing.py writes the help, the
listing and the tables; tests/extract/test_families.py compares the docs with them) read it,
so a new family is its module and its tests.

This module imports no torch: `families()` finds the records by importing the extractors
package (torch, torchvision) the first time a name is validated or listed, which the command
line's start never does. A family that checks a name with its library (timm, OpenCLIP)
imports that library only when a family object is made (`family_for`), not here.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError

# What one stored row describes, by what the decoders hand the family (base.FRAMES/CLIPS/SOUND).
PER = {"frames": "per frame", "clips": "per clip", "sound": "per sound window"}
# The ExtractConfig field a family's option value is read from -> how the option is written.
OPTIONS = {"backbone": "--backbone (BACKBONE=)", "audio_features": "--audio-features (AUDIO_FEATURES=)"}


@dataclass(frozen=True)
class Family:
    """One model family as the options, the listing and the docs see it."""

    name: str  # the registry key and `Extractor.family`, e.g. "timm", "torchvision-video"
    title: str  # how people call it, e.g. "OpenCLIP"
    form: str  # how its option value is written, e.g. "open_clip:ARCH:PRETRAINED"
    examples: tuple[str, ...]  # option values that name real models, the first the most typical
    help: str  # one line: which models, named how
    stores: str  # the vector stored per step, e.g. "the input of the final `Linear`"
    weights: str  # where `WEIGHTS=pretrained` finds the published weights (empty: none)
    preprocessing: str  # where its default resize, crop, mean/std come from
    batch: tuple[int, int] | None  # default items per forward (CUDA, CPU); None: one video's steps
    dim: int | None = None  # D when the family fixes it; None: the model's
    option: str = "backbone"  # the ExtractConfig field that names it
    # Whether a value of the right prefix is well formed (no library import); None: `form`'s shape.
    check: Callable[[str], bool] | None = None
    # For a family that shares its prefix with another (torchvision's video models): whether
    # it computes the set this value names; the family without `selects` takes the rest.
    selects: Callable[[str], bool] | None = None
    gpu_check: bool = False  # `make gpu-check` times its first example beside the others
    extractor: Any = None  # its Extractor subclass, set by `register`

    @property
    def prefix(self) -> str:
        """The option value up to the first colon, e.g. "timm", "resnet50"."""
        return self.form.split(":")[0]

    @property
    def module(self) -> str:
        """The file of its module, relative to the repository, e.g. stages/extract/extractors/timm_image.py."""
        return self.extractor.__module__.replace(".", "/") + ".py"

    @property
    def per(self) -> str:
        return PER[self.extractor.decodes]

    def well_formed(self, value: str) -> bool:
        """`value` has this family's prefix and the form's shape (or passes its own check)."""
        parts = value.split(":")
        if parts[0] != self.prefix:
            return False
        if self.check is not None:
            return self.check(value)
        return len(parts) == len(self.form.split(":")) and all(parts)


# name -> record, in registration order (the order of the listing and the tables)
REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Callable[[type], type]:
    """Class decorator: records `family` with its Extractor subclass, whose `family` it sets."""

    def decorate(cls: type) -> type:
        if family.name in REGISTRY and REGISTRY[family.name].extractor is not cls:
            raise ValueError(f"two model families are named {family.name!r}")
        cls.family = family.name  # type: ignore[attr-defined]
        REGISTRY[family.name] = dataclasses.replace(family, extractor=cls)
        return cls

    return decorate


def families(option: str | None = None) -> list[Family]:
    """Every registered family (those named by `option`, an ExtractConfig field, if given)."""
    importlib.import_module("stages.extract.extractors")  # its modules register themselves
    found = [f for f in REGISTRY.values() if option is None or f.option == option]
    return sorted(found, key=lambda f: (f.option != "backbone", f.title.lower()))  # pictures, then sound


def forms(option: str = "backbone") -> str:
    """How the option's values are written, for messages: each form with an example of each
    family written so, e.g. "open_clip:ARCH:PRETRAINED (open_clip:ViT-B-16:openai), resnet50, ...,
    torchvision:NAME (torchvision:convnext_tiny, torchvision:r2plus1d_18)"."""
    seen: dict[str, list[str]] = {}
    for f in families(option):
        seen.setdefault(f.form, []).extend(e for e in f.examples[:1] if e != f.form)
    return ", ".join(form + (f" ({', '.join(examples)})" if examples else "") for form, examples in seen.items())


def family_named(option: str, value: str) -> Family:
    """The family that computes the set `value` names (an option value, e.g. a --backbone).

    ConfigError naming the option and every family's form when no family takes it."""
    same = [f for f in families(option) if f.well_formed(value)]
    chosen = next((f for f in same if f.selects and f.selects(value)), None)
    chosen = chosen or next((f for f in same if f.selects is None), None)
    if chosen is None:
        raise not_a_name(option, value)
    return chosen


def validate(option: str, value: str) -> None:
    """ConfigError unless some family takes `value`'s form (its library's own check comes with `family_for`)."""
    if not any(f.well_formed(value) for f in families(option)):
        raise not_a_name(option, value)


def not_a_name(option: str, value: str) -> ConfigError:
    return ConfigError(f"{OPTIONS[option]}: {value!r} is not a model name; names are written {forms(option)}")
