"""The documentation stays a front door and a set of pages that hold together: README.md is
short, every relative link of README.md and docs/*.md reaches an existing file (and heading),
and no page speaks of the project's issue numbers. (The commands of the pages are checked by
tests/test_readme_commands.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import DOC_PAGES, REPO

PAGES = DOC_PAGES
#: A newcomer reads the README in five minutes; the rest lives in docs/.
README_MAX_LINES = 250


def prose(text: str) -> str:
    """``text`` without its fenced code blocks and inline code spans (no links live there)."""
    text = re.sub(r"(?ms)^```.*?^```", "", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (inline-code
    backticks included), each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of the headings of a Markdown page (a repeated one gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"(?ms)^```.*?^```", "", page.read_text(encoding="utf-8"))
    for heading in re.findall(r"(?m)^#{1,6} +(.+?) *#*$", text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """Each relative link of ``page`` whose file or heading does not exist, with the reason."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    return broken


def test_the_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail to a "
        f"page of docs/ and link it"
    )


def test_the_design_is_in_the_repository_and_the_readme_links_it():
    assert (REPO / "docs" / "design.md").is_file()
    assert "](docs/design.md)" in (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/design.md" in (REPO / "lm" / "__init__.py").read_text(encoding="utf-8")


def test_the_readme_links_every_docs_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in PAGES[1:] if f"](docs/{p.name}" not in readme]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    assert not broken_links(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_page_cites_issue_numbers(page):
    found = re.findall(r"(?i)\bissues? \d+", page.read_text(encoding="utf-8"))
    assert not found, f"{page.name} speaks of {found}: say what was done, not which issue"


def test_a_broken_link_or_anchor_is_found(tmp_path):
    """The check itself: a missing file, a missing heading, and links that are fine."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text(
        "# Other\n\n## Tokens: `results/{dataset}/tokens/{split}.npy`\n\n## Other\n"
    )
    page = tmp_path / "README.md"
    page.write_text(
        "# Top\n\n## When something goes wrong\n\n"
        "[a](docs/other.md) [b](docs/other.md#tokens-resultsdatasettokenssplitnpy) "
        "[c](docs/other.md#other-1) [d](#when-something-goes-wrong) [e](https://x.org/#y)\n"
        "`[not a link](nowhere.md)`\n\n```\n[nor this](nowhere.md)\n```\n"
        "[f](docs/missing.md) [g](docs/other.md#nothing) [h](#nothing-here)\n"
    )
    assert broken_links(page) == [
        f"docs/missing.md: no file {tmp_path / 'docs' / 'missing.md'}",
        "docs/other.md#nothing: no heading with anchor #nothing in other.md",
        "#nothing-here: no heading with anchor #nothing-here in README.md",
    ]
