"""Each option is written once, in its config field (or as a command's own option): the CLI's
help, the Makefile's option lists (options.mk) and the docs' option tables come from it."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess

import click
import pytest

from stages import cli_docs
from stages.bench.config import BenchConfig
from stages.cli import main
from stages.extract.config import ExtractConfig
from stages.train.config import TrainConfig

REPO = cli_docs.REPO
# Each config and the command whose options are its fields, every one of them.
CONFIG_COMMANDS = [(ExtractConfig, ("features",)), (TrainConfig, ("train",)), (BenchConfig, ("bench",))]


def test_the_generated_files_are_what_the_options_say():
    stale = [str(p.relative_to(REPO)) for p in cli_docs.stale()]
    assert not stale, f"{', '.join(stale)} disagree with the options' fields: run `python -m stages.cli_docs`"


@pytest.mark.parametrize("cls, path", CONFIG_COMMANDS)
def test_every_field_is_an_option_with_its_help_and_make_variable(cls, path):
    by_dest = {o.name: o for o in cli_docs.options(path)}
    for field in dataclasses.fields(cls):
        assert field.metadata.get("help"), f"{cls.__name__}.{field.name} has no help (pipeline.config.option)"
        o = by_dest[field.name]
        make = field.metadata.get("make", field.name.upper())
        assert o.make_var == make
        assert o.help == f"{field.metadata['help']} ({make}{'=1' if o.is_flag else '='})"
        if "choices" in field.metadata:
            assert isinstance(o.type, click.Choice) and tuple(o.type.choices) == field.metadata["choices"]
        if not isinstance(field.default, tuple) and not o.is_flag:
            assert o.default == field.default, field.name


def test_every_command_with_a_make_target_has_a_make_variable_per_option():
    commands = {name for name in main.commands if name != "allocator"}  # `allocator` takes no option
    wrapped = {path[0] for path in cli_docs.MAKE_TARGETS.values()}
    assert wrapped == commands, f"no Make target wraps {sorted(commands - wrapped)}"
    for group in (c for c in main.commands.values() if isinstance(c, click.Group)):  # store, annotations
        sub = {path[1] for path in cli_docs.MAKE_TARGETS.values() if len(path) > 1 and path[0] == group.name}
        assert sub == set(group.commands), f"no Make target wraps `{group.name}` {sorted(set(group.commands) - sub)}"
    for target, path in cli_docs.MAKE_TARGETS.items():
        variables = [o.make_var for o in cli_docs.options(path)]  # raises for an option without one
        assert len(set(variables)) == len(variables), f"{target}: a Make variable names two options"


def test_a_plain_click_option_is_refused_as_having_no_make_variable():
    @click.command()
    @click.option("--loose", help="Written outside the fields.")
    def loose(loose):
        pass

    main.add_command(loose, "loose-test")
    try:
        with pytest.raises(TypeError, match="loose-test --loose has no Make variable"):
            list(cli_docs.options(("loose-test",)))
    finally:
        del main.commands["loose-test"]


def recipe_line(target: str, assignments: list[str]) -> str:
    """The `python -m stages ...` line `make -n` prints for `target` (nothing run)."""
    out = subprocess.run(
        ["make", "-n", target, *assignments], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    (line,) = [ln for ln in out.splitlines() if " -m stages " in ln]
    return line


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
@pytest.mark.parametrize("target", list(cli_docs.MAKE_TARGETS))
def test_make_passes_every_variable_as_its_option(target):
    opts = list(cli_docs.options(cli_docs.MAKE_TARGETS[target]))
    assignments = [f"{o.make_var}={'1' if o.make_switch else f'v{k}'}" for k, o in enumerate(opts)]
    line = recipe_line(target, [*assignments, "VIDEO=a.avi"])
    want = [o.make_switch if o.make_switch else f'{o.opts[0]} "v{k}"' for k, o in enumerate(opts)]
    assert re.findall(r'--[\w-]+(?: "v\d+")?', line.split(" -m stages ", 1)[1]) == want, line


def test_a_docs_row_that_disagrees_with_its_field_is_caught():
    text = (REPO / "docs/extraction.md").read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| `SHARD_SIZE` |"))
    assert "| 256 |" in row and "Videos per shard file." in row
    assert cli_docs.render(text.replace(row, row.replace("| 256 |", "| 512 |"))) == text
    assert cli_docs.render(text.replace("Videos per shard file.", "Videos per shard.")) == text
