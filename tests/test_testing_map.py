"""docs/testing.md's map of the acceptance tier (README command | test | what it checks) is
checked against the test files: every test it names exists, every acceptance test is in it, and
its wording is the tests' own: each `VAR=value` of a command, each make target and each quoted
output it claims is in the sources of the test (its file and the tier's shared modules)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAP = REPO / "docs" / "testing.md"
TIER = REPO / "tests" / "acceptance"
SHARED = ("conftest.py", "make_runs.py")  # fixtures and the `make` runner every test of the tier uses
CODE = re.compile(r"`([^`\n]+)`")


def map_rows(text: str) -> list[tuple[str, str, str]]:
    """(README command, test, what it checks) of each row of the map's table."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if line.startswith("|") and len(cells) == 3 and not set(cells[0]) <= {"-", " "} and cells[1] != "test":
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def defined_tests(path: Path) -> dict[str, str]:
    """test function name -> its source, for a test file."""
    text = path.read_text()
    return {
        node.name: ast.get_source_segment(text, node) or ""
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def find_test(ref: str) -> tuple[Path, str] | None:
    """(file, function) of `name` or `file.py::name` among the tier's test files."""
    file, _, name = ref.rpartition("::")
    for path in sorted(TIER.glob("test_*.py")):
        if (not file or path.name == file) and name in defined_tests(path):
            return path, name
    return None


def sources_of(path: Path) -> str:
    """The test file and the tier's modules it imports from (shared ones included), as written and
    as read: each {NAME} of an f-string replaced by that module constant's value, and each regex
    escape of a punctuation mark dropped (r"OK \\(1 shard" reads "OK (1 shard")."""
    text = path.read_text()
    imported = set(re.findall(r"^from (\w+) import", text, re.M)) | {m.removesuffix(".py") for m in SHARED}
    texts = [text] + [(TIER / f"{m}.py").read_text() for m in sorted(imported) if (TIER / f"{m}.py").is_file()]
    constants: dict[str, str] = {}
    for t in texts:
        for node in ast.parse(t).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, (str, int)):
                    constants[node.targets[0].id] = str(node.value.value)
    written = "\n".join(texts)
    read = re.sub(r"\{(\w+)\}", lambda m: constants.get(m[1], m[0]), written)
    return written + "\n" + re.sub(r"\\([^\w\s])", r"\1", read)


def claims(command: str, checks: str) -> list[str]:
    """What a row says the test runs and sees, as fragments its sources must hold. A code span
    that is a command (`make TARGET VAR=value ...`, or only VAR=value words) gives the target's
    quoted name and each VAR=value, cut at '...' ('WEIGHTS=...' claims 'WEIGHTS='); any other code
    span, of either column, is claimed as written, cut at '...'."""
    out = []
    for span in CODE.findall(command) + CODE.findall(checks):
        words = span.split()
        if words[0] == "make" or all(re.fullmatch(r"[A-Z_]+=\S*", w) for w in words):
            if words[0] == "make":
                out.append(f'"{words[1]}"')
                words = words[2:]
            out += [part for w in words for part in w.split("...") if part]
        else:
            out += [part.strip() for part in span.split("...") if part.strip()]
    return out


ROWS = map_rows(MAP.read_text())


def test_the_map_has_rows():
    assert len(ROWS) >= 10, f"no table of the acceptance tier found in {MAP}"


@pytest.mark.parametrize("command, test, checks", ROWS, ids=[r[1].strip("`") for r in ROWS])
def test_each_row_names_a_test_that_checks_what_it_says(command, test, checks):
    (ref,) = CODE.findall(test)
    found = find_test(ref)
    assert found, f"docs/testing.md names {ref}, which no file of tests/acceptance/ defines"
    sources = sources_of(found[0])
    missing = [c for c in claims(command, checks) if c not in sources]
    assert not missing, f"docs/testing.md's row for {ref} claims {missing}, which {found[0].name} does not hold"


def test_every_acceptance_test_is_in_the_map():
    listed = {CODE.findall(test)[0].rpartition("::")[2] for _, test, _ in ROWS}
    defined = {name for path in TIER.glob("test_*.py") for name in defined_tests(path)}
    assert defined <= listed, f"acceptance tests missing from docs/testing.md's map: {sorted(defined - listed)}"


def test_claims_read_commands_and_outputs():
    command = "`make features BACKBONE=timm:x WEIGHTS=...` (`SIZE=64 FRAMES=8`, marked `slow`)"
    assert claims(command, "exit 0, `OK (1 shard checked)`, the `lstm split 1: top1 ...` line") == [
        '"features"', "BACKBONE=timm:x", "WEIGHTS=", "SIZE=64", "FRAMES=8", "slow", "OK (1 shard checked)",
        "lstm split 1: top1",
    ]  # fmt: skip
    assert map_rows("| a | `t` | `x \\| y` |\n| --- | --- | --- |") == [("a", "`t`", "`x | y`")]
