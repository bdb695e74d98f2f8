"""Every document the code cites is in the repository, and so is every section it cites.

The code and the docs cite the project's documents by file name and section, e.g. `paligemma2-facts.md §1.7`,
`facts §2.6` (short for paligemma2-facts.md), `metric-facts §3, "MIMIC-CXR"` or `DESIGN.md "results/"`. This
test finds those citations in the repository's .py, .yaml and .md files and checks that

- the cited file exists: a bare name is looked up beside the citing file, at the repository root and in
  `docs/` (case-insensitively, so `DESIGN.md` finds `docs/design.md`); a path is taken relative to the citing
  file or the repository root and must stay inside the repository;
- each cited `§N.M` (and both ends of a range `§0.9-§0.10`) is the number of a heading of that file;
- a quoted name right after the citation ("Task grouping") occurs in that file.

A `§` with no document before it (`the paper's §4.1`) cites the paper and is not checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
SCANNED = (".py", ".yaml", ".yml", ".md")
SKIPPED_DIRS = {".git", ".venv", "venv", "runs", "data", "build", "dist", "node_modules", "__pycache__"}
# Files the harness writes (named in the code and the README as outputs), not documents anyone cites.
OUTPUT_NAMES = {"tables.md", "tasks.md", "recipes.md", "empty.md"}  # the last three: golden listing files
# Short names the code uses for the two facts documents.
ALIASES = {"facts": "paligemma2-facts.md", "metric-facts": "metric-facts.md",
           "paligemma2-facts": "paligemma2-facts.md"}

SECTION = r"§\s?(\d+(?:\.\d+)*)"
# One cited section, optionally a range (§0.9-§0.10) and a parenthesised gloss: "§1.2 (SigLIP So400m/14)".
ITEM = rf"{SECTION}(?:\s*[-–]\s*{SECTION})?(?:\s*\([^()]*\))?"
SECTIONS = rf"(?P<sections>{ITEM}(?:\s*(?:,|and|&)\s*{ITEM})*)"
QUOTED = r"(?:(?:\s*,\s*|\s+)\"(?P<quoted>\w[^\"\n]*)\")?"
MD_PATH = r"(?P<path>(?:\.{1,2}/|[\w-]+/)*[\w.-]+\.md)\b"
ALIAS = r"(?P<alias>metric-facts|paligemma2-facts|facts)(?=\s+§)"
CITATION = re.compile(rf"(?<![\w/.-])(?:{MD_PATH}|{ALIAS})(?:\s*{SECTIONS})?{QUOTED}")
HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", re.M)


@dataclass(frozen=True)
class Citation:
    source: Path
    line: int
    cited: str
    sections: tuple[str, ...]
    quoted: str | None

    def __str__(self) -> str:
        return f"{self.source.relative_to(REPO)}:{self.line}: {self.cited}"


def _scanned_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*"):
        parts = path.relative_to(REPO).parts
        skipped = any(p in SKIPPED_DIRS or p.startswith(".") or p.endswith(".egg-info") for p in parts[:-1])
        if path.suffix in SCANNED and path.is_file() and not skipped and path != Path(__file__).resolve():
            files.append(path)
    return sorted(files)


def _citations(path: Path) -> list[Citation]:
    text = path.read_text(encoding="utf-8")
    found = []
    for m in CITATION.finditer(text):
        cited = m["path"] or ALIASES[m["alias"]]
        if Path(cited).name in OUTPUT_NAMES:
            continue
        sections = tuple(s for pair in re.findall(r"§\s?(\d+(?:\.\d+)*)", m["sections"] or "") for s in [pair])
        found.append(Citation(path, text.count("\n", 0, m.start()) + 1, cited, sections, m["quoted"]))
    return found


def _resolve(citation: Citation) -> Path | None:
    """The repository file a citation names, or None."""
    cited = Path(citation.cited)
    if len(cited.parts) == 1:  # a bare name: beside the citing file, at the root, or in docs/
        for folder in (citation.source.parent, REPO, DOCS):
            if folder.is_dir():
                for candidate in folder.iterdir():
                    if candidate.name.lower() == cited.name.lower() and candidate.is_file():
                        return candidate
        return None
    for base in (citation.source.parent, REPO):
        candidate = (base / cited).resolve()
        if candidate.is_file() and candidate.is_relative_to(REPO):
            return candidate
    return None


def _headings(doc: Path) -> set[str]:
    return set(HEADING.findall(doc.read_text(encoding="utf-8")))


ALL = [c for f in _scanned_files() for c in _citations(f)]


def test_the_code_cites_the_three_documents():
    cited = {Path(c.cited).name.lower() for c in ALL}
    assert {"paligemma2-facts.md", "metric-facts.md", "design.md"} <= cited
    assert sum(bool(c.sections) for c in ALL) > 40  # the scan sees the section citations


@pytest.mark.parametrize("citation", ALL, ids=str)
def test_cited_file_and_sections_exist(citation):
    doc = _resolve(citation)
    assert doc is not None, f"{citation}: no such file in the repository"
    missing = sorted(set(citation.sections) - _headings(doc))
    assert not missing, f"{citation}: {doc.relative_to(REPO)} has no heading numbered {', '.join(missing)}"
    if citation.quoted:
        assert citation.quoted in doc.read_text(encoding="utf-8"), (
            f"{citation}: {doc.relative_to(REPO)} does not contain {citation.quoted!r}")


def test_the_checker_catches_a_missing_section_and_a_missing_file(tmp_path):
    source = REPO / "model" / "example.py"  # never written: only its folder matters to _resolve
    assert _resolve(Citation(source, 1, "metric-facts.md", (), None)) == DOCS / "metric-facts.md"
    assert _resolve(Citation(source, 1, "no-such-notes.md", (), None)) is None
    assert _resolve(Citation(source, 1, "../../outside/paligemma2-facts.md", (), None)) is None
    text = 'x  # paligemma2-facts.md §1.1-§1.3, §0.9 (loss), and facts §42.7 "Task grouping"; the paper §4.1'
    (tmp_path / "x.py").write_text(text)
    cites = _citations(tmp_path / "x.py")
    assert [(c.cited, c.sections, c.quoted) for c in cites] == [
        ("paligemma2-facts.md", ("1.1", "1.3", "0.9"), None),
        ("paligemma2-facts.md", ("42.7",), "Task grouping")]
    assert "42.7" not in _headings(DOCS / "paligemma2-facts.md")
