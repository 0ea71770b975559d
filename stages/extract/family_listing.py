"""What the registry of model families (families.py) says to people: `--backbone`'s help,
`vidstore backbones`, and the docs' family tables (README.md, docs/extraction.md,
docs/architecture.md), which tests/extract/test_families.py compares with the documents.
Each option's default family comes first, as ExtractConfig's field says it."""

from __future__ import annotations

import dataclasses

from .config import ExtractConfig
from .families import Family, families


def ordered(option: str | None = None) -> list[Family]:
    """The registered families (of `option`), each option's default first."""
    return sorted(families(option), key=lambda f: (f.option != "backbone", default_of(f.option) != f.form))


def default_of(option: str) -> str:
    """The option's default value, from ExtractConfig."""
    return str({f.name: f.default for f in dataclasses.fields(ExtractConfig)}[option])


def backbone_help() -> str:
    """--backbone's help: each family's form and an example, as its library names models."""
    default = default_of("backbone")
    parts = [
        f"{f.title}: {f.form} " + ("(the default)" if f.form == default else f"({f.examples[0]})")
        for f in ordered("backbone")
    ]
    return f"{' | '.join(parts)}; as its library names it, `vidstore backbones` lists them (BACKBONE=)."


def written(f: Family) -> str:
    """How a family's values are written, for tables: its form and its examples."""
    default = " (default)" if default_of(f.option) == f.form else ""
    others = [e for e in f.examples if e != f.form]
    return f"`{f.form}`{default}" + (": " + ", ".join(f"`{e}`" for e in others) if others else "")


def stored(f: Family) -> str:
    """What a set of the family holds per step, e.g. "per frame, 2048-d: the global average pool"."""
    width = f"{f.dim}-d" if f.dim else "D the model's"
    return f"{f.per}, {width}: {f.stores}"


def family_table(preprocessing: bool = False) -> str:
    """The docs' table of the --backbone families (README.md; docs/extraction.md with the
    preprocessing column), one Markdown row per family, as `vidstore backbones --markdown` prints it."""
    head = ["family", "`BACKBONE=`", "stored", "weights (`WEIGHTS=pretrained`)"]
    head += ["default preprocessing"] if preprocessing else []
    rows = [
        [f.title, written(f), stored(f), f.weights] + ([f.preprocessing] if preprocessing else [])
        for f in ordered("backbone")
    ]
    return markdown(head, rows)


def module_table() -> str:
    """docs/architecture.md's table: every family's module, what it decodes, D and its option."""
    rows = []
    for f in ordered():
        variable = f.option.upper()
        option = f"`{variable}={f.form}`" + (" (default)" if default_of(f.option) == f.form else "")
        if f.option == "audio_features":
            option = f"`MODALITY=audio` {option}"
        name = f.module.rsplit("/", 1)[-1]
        rows.append([f"[{name}](../{f.module})", f.title, f.per, str(f.dim or "the model's"), option])
    return markdown(["module", "family", "stores", "D", "option"], rows)


def doc_tables() -> dict[str, str]:
    """Each document's generated table, by the name `vidstore backbones --markdown` takes."""
    return {"readme": family_table(), "extraction": family_table(preprocessing=True), "architecture": module_table()}


def markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = [head, ["---"] * len(head), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


# What `vidstore backbones` says before the families each option names.
SECTIONS = {
    "backbone": "BACKBONE= (--backbone), the pictures:",
    "audio_features": "AUDIO_FEATURES= (--audio-features), the sound, with MODALITY=audio:",
}


def listing() -> str:
    """`vidstore backbones`: each family, by the option that names it: how it is written,
    examples, what a set of it stores, where its published weights come from."""
    sections = []
    for option, heading in SECTIONS.items():
        blocks = [heading]
        for f in ordered(option):
            default = " (the default)" if default_of(option) == f.form else ""
            blocks.append(
                f"{f.title}: {f.form}{default}\n  {f.help}\n  e.g. {', '.join(f.examples)}\n  stores {stored(f)}"
                + (f"\n  published weights: {f.weights}" if f.weights else "")
            )
        sections.append("\n\n".join(blocks))
    return "\n\n\n".join(sections)
