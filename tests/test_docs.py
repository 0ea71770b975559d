"""The README stays a front door: short, with an index that reaches every page of docs/, and no
relative link in the README or docs/ pointing at a file that is not there."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 250
INDEX_HEADING = "## Documentation"

FENCED = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


def links(text: str) -> list[str]:
    """Markdown link targets of `text`, code (fenced and inline) left out."""
    return LINK.findall(INLINE_CODE.sub("", FENCED.sub("", text)))


def relative_targets(page: Path) -> list[tuple[str, Path]]:
    """(link as written, file it names) for every link of `page` that is not a URL or an anchor."""
    out = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        out.append((target, (page.parent / target.split("#", 1)[0]).resolve()))
    return out


def doc_pages() -> list[Path]:
    return sorted((REPO / "docs").glob("*.md"))


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; keep it <= {MAX_README_LINES} and move detail to docs/"


def test_readme_index_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    assert INDEX_HEADING in text, f"README.md has no {INDEX_HEADING!r} section (the index of docs/)"
    index = text.split(INDEX_HEADING, 1)[1].split("\n## ", 1)[0]
    linked = {(REPO / t.split("#", 1)[0]).resolve() for t in links(index)}
    missing = [p.relative_to(REPO).as_posix() for p in doc_pages() if p.resolve() not in linked]
    assert doc_pages(), "docs/ holds no .md page"
    assert not missing, f"docs pages missing from README's {INDEX_HEADING!r} index: {missing}"


def test_relative_links_resolve():
    broken = [
        f"{page.relative_to(REPO).as_posix()}: {target}"
        for page in [README, *doc_pages()]
        for target, path in relative_targets(page)
        if not path.exists()
    ]
    assert not broken, "relative links to files that do not exist:\n" + "\n".join(broken)


def test_link_finder_sees_links_and_skips_code():
    text = "see [a](docs/a.md) and `[b](b.md)`\n```\n[c](c.md)\n```\n[d](https://x.org/d)"
    assert links(text) == ["docs/a.md", "https://x.org/d"]
