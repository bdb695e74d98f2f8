"""The memory-plan tables in docs/memory-plan.md are what `paligemma-transfer cost --plan` prints today:
each fenced `$ paligemma-transfer cost ...` command is run in-process and its output must equal the text
that follows it in the document, so a change to the partition rules or the plan cannot leave the
published tables stale."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from harness import cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "memory-plan.md"
BLOCK = re.compile(r"```\n\$ (paligemma-transfer cost [^\n]+)\n```\n(.*?)\n\n(?!\|)", re.S)


def _blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_the_document_has_the_tables():
    assert len(_blocks()) >= 6


@pytest.mark.parametrize("command, printed", _blocks(), ids=[c.split("cost ")[1] for c, _ in _blocks()])
def test_each_table_is_what_the_command_prints(command, printed):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(shlex.split(command)[1:]) in (0, None)
    assert out.getvalue().strip() == printed.strip()
