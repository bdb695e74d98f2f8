"""Ctrl-C during `paligemma-transfer run` ends in one line with the resume hint, not a traceback."""

from __future__ import annotations

import harness.cli as cli


def test_ctrl_c_is_one_line_with_the_resume_hint(monkeypatch, capsys):
    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_run", interrupted)
    assert cli.main(["run", "--dry-run"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "paligemma-transfer run: interrupted; run the same command again to resume (finished cells are kept; "
        "a cell resumes from its last checkpoint)"]
