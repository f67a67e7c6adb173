"""README.md and docs/*.md: every relative link resolves, and the README stays a short read that leads to EMR.

A link resolves when the file or folder it names exists and its `#anchor`, if any, is the anchor GitHub gives one of
that page's headings. Links inside code (fenced blocks, `spans`) and absolute URLs are not checked: no network.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator, List, Set, Tuple
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200
EMR_PAGE = "docs/emr.md"
# Pages written on another branch: a link to one may not resolve until it is merged; once the file exists it is
# checked like any other.
NOT_YET_MERGED: frozenset = frozenset()

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:name|id)=\"([^\"]+)\"", re.I)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


def prose_lines(markdown: str) -> Iterator[Tuple[int, str]]:
    """(line number, text) of every line outside fenced code blocks, code spans replaced by their text."""
    fence = ""
    for number, line in enumerate(markdown.splitlines(), 1):
        opened = _FENCE.match(line)
        if fence:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence) \
                    and not line.strip()[len(opened.group(1)):].strip():
                fence = ""
            continue
        if opened:
            fence = opened.group(1)
            continue
        yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text as rendered, lower case, punctuation dropped, each space a hyphen."""
    text = _CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML shows nothing of its tags
    text = re.sub(r"[*~]", "", text)  # emphasis
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> Set[str]:
    """Every anchor a page has: its headings' (a repeated one gets -1, -2, ...) and explicit HTML ones."""
    found: Set[str] = set()
    seen: dict = {}
    for _, line in prose_lines(markdown):
        heading = _HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(_HTML_ANCHOR.findall(line))
    return found


def links(markdown: str) -> Iterator[Tuple[int, str]]:
    """(line number, target) of every inline, image and reference link outside code."""
    for number, line in prose_lines(markdown):
        line = _CODE_SPAN.sub(lambda m: "x" * len(m.group(2)), line)
        reference = _REFERENCE.match(line)
        if reference:
            yield number, reference.group(1)
            continue
        for match in _LINK.finditer(line):
            yield number, match.group(1)


def broken_links(page: Path, root: Path, pending: Iterable[str] = ()) -> List[str]:
    """What is wrong with each relative link of `page` (paths relative to `root` in the messages)."""
    problems = []
    name = page.relative_to(root).as_posix()
    for number, target in links(page.read_text(encoding="utf-8")):
        if not target or _SCHEME.match(target) or target.startswith("//"):
            continue  # absolute URLs and mail addresses are not checked
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        where = f"{name}:{number}: {target}"
        if not dest.exists():
            shown = dest.relative_to(root).as_posix() if dest.is_relative_to(root) else str(dest)
            if shown not in set(pending):
                problems.append(f"{where}: {shown} does not exist")
            continue
        if anchor and dest.is_file() and dest.suffix == ".md":
            if unquote(anchor) not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{where}: no heading of {dest.relative_to(root).as_posix()} has anchor #{anchor}")
    return problems


# --- the checker itself ------------------------------------------------------------------------------------------

def test_slugs_are_githubs():
    assert slug("Running on EMR, or on your own Spark cluster") == "running-on-emr-or-on-your-own-spark-cluster"
    assert slug("EmrEtlRunner's config.yml") == "emretlrunners-configyml"
    assert slug("`pipeline/` in floors") == "pipeline-in-floors"
    assert slug("The import method: no write capacity") == "the-import-method-no-write-capacity"
    assert slug("End to end: the real command (`make bench-e2e`)") == "end-to-end-the-real-command-make-bench-e2e"
    assert slug("**Bold** and [a link](x.md)") == "bold-and-a-link"
    assert slug("max_read_capacity") == "max_read_capacity"


def test_the_checker_catches_a_missing_file_and_a_wrong_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "emr.md").write_text("# Running on EMR\n\n## The EMR runner\n\n## Steps\n\n## Steps\n")
    (tmp_path / "README.md").write_text(
        "# Title\n\n"
        "[ok](docs/emr.md) [ok](docs/emr.md#the-emr-runner) [ok](docs/emr.md#steps-1) [ok](#title) [ok](docs/)\n"
        "[gone](docs/missing.md)\n"
        "[bad anchor](docs/emr.md#the-emr-runnner)\n"
        "[bad here](#no-such-heading)\n"
        "[web](https://example.com/missing.md) [mail](mailto:a@b.c) `[in code](docs/nope.md)`\n"
        "```\n[in a fence](docs/nope.md)\n# not a heading\n```\n"
        "[not a heading](#not-a-heading)\n"
        "[ref]: docs/also-missing.md\n")
    assert broken_links(tmp_path / "README.md", tmp_path) == [
        "README.md:4: docs/missing.md: docs/missing.md does not exist",
        "README.md:5: docs/emr.md#the-emr-runnner: no heading of docs/emr.md has anchor #the-emr-runnner",
        "README.md:6: #no-such-heading: no heading of README.md has anchor #no-such-heading",
        "README.md:12: #not-a-heading: no heading of README.md has anchor #not-a-heading",
        "README.md:13: docs/also-missing.md: docs/also-missing.md does not exist"]
    assert broken_links(tmp_path / "README.md", tmp_path, pending={"docs/missing.md", "docs/also-missing.md"}) == [
        "README.md:5: docs/emr.md#the-emr-runnner: no heading of docs/emr.md has anchor #the-emr-runnner",
        "README.md:6: #no-such-heading: no heading of README.md has anchor #no-such-heading",
        "README.md:12: #not-a-heading: no heading of README.md has anchor #not-a-heading"]


# --- the documentation -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    assert broken_links(page, ROOT, NOT_YET_MERGED) == []


def test_the_readme_is_short_and_leads_to_the_emr_page_near_its_top():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines: move detail into docs/"
    first = [number for number, target in links("\n".join(lines)) if target.partition("#")[0] == EMR_PAGE]
    assert first and first[0] <= 40, "README.md must link to docs/emr.md near its top"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {target.partition("#")[0] for _, target in links(README.read_text(encoding="utf-8"))}
    assert {p.relative_to(ROOT).as_posix() for p in PAGES[1:]} <= linked
