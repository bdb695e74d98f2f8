"""The fault matrix (docs/fault-matrix.md): each fault ends in a clear one-line error or a clean resume,
and nothing is lost or run twice. Scheduler-level faults use tests/helpers/fake_runner.py (it logs every
start to workdir/runner.log, so a test can count runs); checkpoint faults use the real trainer."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.run import scheduler
from harness.run.demo_data import prepare_demo_data
from harness.run.grid import GridError, load_grid
from harness.run.scheduler import RunError, run_grid
from harness.run.workdir import OUTCOME, cell_dir
from results.store import has_record, load_records, record_path

REPO = Path(__file__).resolve().parents[1]

GRID = """\
name: faults
demo: true
tasks: [vqav2]
sizes: [nano-s, nano-m]
resolutions: [32]
lrs: [1.0e-3]
data_root: {data}
checkpoints: {checkpoints}
runner: tests.helpers.fake_runner:{runner}
{extra}"""


def make_grid(tmp_path: Path, runner: str = "run", checkpoints: str = "random", extra: str = "") -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(data=tmp_path / "data", checkpoints=checkpoints, runner=runner, extra=extra))
    return path


def starts(workdir: Path) -> list[str]:
    log = workdir / "runner.log"
    return [line.split()[1] for line in log.read_text().splitlines() if line.startswith("start")] \
        if log.exists() else []


def enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- no space left on device ----------------------------------------------------------------------------

def test_enospc_writing_a_record_then_the_rerun_writes_it_without_running_again(tmp_path, monkeypatch):
    grid = load_grid(make_grid(tmp_path))
    workdir = tmp_path / "w"
    real = scheduler.write_record
    calls = []
    monkeypatch.setattr(scheduler, "write_record", lambda *a: calls.append(1) or (
        enospc() if len(calls) == 1 else real(*a)))
    with pytest.raises(RunError, match="No space left on device") as info:
        run_grid(grid, workdir, progress=False)
    assert "\n" not in str(info.value)
    first = grid.final_cells(grid.fixed_lrs())[0]
    assert not has_record(workdir, first.cell_id) and (cell_dir(workdir, first.cell_id) / OUTCOME).is_file()
    monkeypatch.setattr(scheduler, "write_record", real)
    ran = len(starts(workdir))
    records = run_grid(grid, workdir, progress=False)
    assert len(records) == 2 and len(starts(workdir)) == ran  # written from the saved outcome
    assert not (cell_dir(workdir, first.cell_id) / OUTCOME).exists()


def test_enospc_writing_predictions_fails_the_cell_in_one_line_then_resumes(tmp_path, capsys, monkeypatch):
    grid = make_grid(tmp_path, runner="run_predictions_enospc")
    monkeypatch.setenv("FAKE_RUNNER_ENOSPC", "1")
    code = main(["run", str(grid), "--workdir", str(tmp_path / "w"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("paligemma-transfer run: error: RunError: 2 final cell(s) failed")
    assert "No space left on device" in last and "Traceback" not in err
    cells = list((tmp_path / "w" / "cells").iterdir())
    assert all("Traceback" in (c / "error.txt").read_text() for c in cells)
    assert not [p for c in cells for p in c.iterdir() if ".tmp" in p.name]  # no half predictions file
    monkeypatch.delenv("FAKE_RUNNER_ENOSPC")
    assert main(["run", str(grid), "--workdir", str(tmp_path / "w"), "--quiet"]) == 0
    assert len(load_records(tmp_path / "w")) == 2


# --- damaged files --------------------------------------------------------------------------------------

def test_corrupt_record_is_named_in_one_line_and_kept(tmp_path, capsys):
    grid = make_grid(tmp_path, extra="protocol: {final: {seeds: 1}}\n")
    workdir = tmp_path / "w"
    assert main(["run", str(grid), "--workdir", str(workdir), "--quiet"]) == 0
    capsys.readouterr()
    victim = min((workdir / "records").glob("*.json"))
    victim.write_text('{"cell_id": "x", "metr')
    assert main(["run", str(grid), "--workdir", str(workdir), "--quiet"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(victim) in errors[0] and "corrupt record" in errors[0]
    assert "Traceback" not in err
    assert victim.read_text() == '{"cell_id": "x", "metr'  # kept for a person to look at


def test_sigkill_while_writing_a_record_resumes_without_running_again(tmp_path):
    grid = make_grid(tmp_path)
    workdir = tmp_path / "w"
    script = ("import os, signal, sys\n"
              "from harness.run import scheduler\n"
              "from harness.run.grid import load_grid\n"
              "def dying(workdir, record):\n"
              "    path = scheduler.record_path(workdir, record.cell_id)\n"
              "    path.parent.mkdir(parents=True, exist_ok=True)\n"
              "    (path.parent / ('.' + path.name + '.half.tmp')).write_text('{\"cell_id\": ')\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "scheduler.write_record = dying\n"
              "scheduler.run_grid(load_grid(sys.argv[1]), sys.argv[2], progress=False)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", script, str(grid), str(workdir)], check=False, env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(starts(workdir)) == 1 and not load_records(workdir)  # a half record is no record
    records = run_grid(load_grid(grid), workdir, progress=False)
    assert len(records) == 2 and len(starts(workdir)) == 2  # the killed cell was not run again


# --- changes between two runs ---------------------------------------------------------------------------

def test_checkpoint_replaced_between_runs_reruns_its_cells_and_keeps_the_old_records(tmp_path):
    (tmp_path / "ck-nano-s-32.npz").write_bytes(b"v1")
    (tmp_path / "ck-nano-m-32.npz").write_bytes(b"v1")
    grid_path = make_grid(tmp_path, checkpoints=str(tmp_path / "ck-{size}-{resolution}.npz"))
    workdir = tmp_path / "w"
    before = {r.cell_id for r in run_grid(load_grid(grid_path), workdir, progress=False)}
    replaced = tmp_path / "ck-nano-s-32.npz"
    replaced.write_bytes(b"v2")
    os.utime(replaced, ns=(replaced.stat().st_atime_ns, replaced.stat().st_mtime_ns + 10**9))
    after = {r.cell_id for r in run_grid(load_grid(grid_path), workdir, progress=False)}
    assert len(after - before) == 1 and next(iter(after - before)).startswith("vqav2-nano-s-32-")
    assert starts(workdir).count(next(iter(after - before))) == 1 and len(starts(workdir)) == 3
    assert {r.cell_id for r in load_records(workdir)} == before | after  # the old record is kept


def test_changed_demo_sizes_regenerate_the_data_and_change_the_ids(tmp_path):
    (tmp_path / "g.yaml").write_text(
        f"name: d\ndemo: {{num_train: 4, num_eval: 3, seed: 0}}\ntasks: [vqav2]\nsizes: [nano-s]\n"
        f"resolutions: [32]\nlrs: [1.0e-3]\ndata_root: {tmp_path / 'data'}\ncheckpoints: random\n")
    grid = load_grid(tmp_path / "g.yaml")
    prepare_demo_data(grid)
    questions = tmp_path / "data" / "vqav2" / "v2_OpenEnded_mscoco_val2014_questions.json"
    first = len(json.loads(questions.read_text())["questions"])
    (tmp_path / "g.yaml").write_text((tmp_path / "g.yaml").read_text().replace("num_eval: 3", "num_eval: 8"))
    grid8 = load_grid(tmp_path / "g.yaml")
    prepare_demo_data(grid8)
    assert len(json.loads(questions.read_text())["questions"]) > first
    assert grid8.final_cells(grid8.fixed_lrs())[0].cell_id != grid.final_cells(grid.fixed_lrs())[0].cell_id
    own = tmp_path / "data" / "vqav2" / ".demo.json"
    own.unlink()  # without the marker the folder is someone's own data: never regenerated
    prepare_demo_data(grid)
    assert len(json.loads(questions.read_text())["questions"]) > first


# --- checks when the grid is loaded, disk, permissions --------------------------------------------------

def test_override_typo_fails_the_dry_run_with_file_and_line(tmp_path, capsys):
    path = tmp_path / "g.yaml"
    path.write_text("name: x\ntasks: [vqav2]\nsizes: [nano-s]\nresolutions: [32]\nlrs: [1.0e-3]\n"
                    "checkpoints: random\noverrides:\n  all: {steps: 3}\n  vqav2:\n    checkpoint_evry: 5\n")
    with pytest.raises(GridError, match=rf"{path}:10: overrides.vqav2.checkpoint_evry: .*'checkpoint_every'"):
        load_grid(path)
    assert main(["run", str(path), "--dry-run"]) == 2
    assert "checkpoint_evry" in capsys.readouterr().err


@pytest.mark.parametrize("keep,kept", [("none", set()), ("params", {"params.npz"}),
                                       ("all", {"params.npz", "ckpt"})])
def test_keep_checkpoints_is_applied_when_the_record_is_written(tmp_path, keep, kept):
    grid = load_grid(make_grid(tmp_path, runner="run_with_state", extra=f"keep_checkpoints: {keep}\n"))
    workdir = tmp_path / "w"
    records = run_grid(grid, workdir, progress=False)
    for r in records:
        assert {p.name for p in cell_dir(workdir, r.cell_id).iterdir()} & {"params.npz", "ckpt"} == kept


def test_dry_run_shows_the_disk_kept_and_missing_checkpoints(tmp_path, capsys):
    path = make_grid(tmp_path, checkpoints=str(tmp_path / "nope-{size}-{resolution}.npz"),
                     extra="keep_checkpoints: params\n")
    assert main(["run", str(path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "disk kept by finished cells (keep_checkpoints: params):" in out
    assert "left to run per task:" in out and "  vqav2: 2 cells" in out
    assert err.count("warning: base checkpoint") == 2 and "nope-nano-s-32.npz" in err


def test_records_share_the_permissions_of_the_other_outputs(tmp_path):
    old = os.umask(0o022)
    try:
        workdir = tmp_path / "w"
        records = run_grid(load_grid(make_grid(tmp_path)), workdir, progress=False)
        mode = stat.S_IMODE(record_path(workdir, records[0].cell_id).stat().st_mode)
    finally:
        os.umask(old)
    assert mode == 0o644
    assert records[0].schema_version == 2 and records[0].provenance["project_version"]
    assert "git_commit" in records[0].provenance and "device_kind" in records[0].provenance


def test_raw_file_changed_between_runs_is_announced_and_nothing_reruns(tmp_path, capsys):
    grid_path = make_grid(tmp_path)
    raw = tmp_path / "data" / "vqav2"
    raw.mkdir(parents=True)
    (raw / "answers.json").write_text("[1]")
    workdir = tmp_path / "w"
    records = run_grid(load_grid(grid_path), workdir, progress=False)
    assert all(r.provenance["raw_data"] for r in records)
    capsys.readouterr()
    (raw / "answers.json").write_text("[2, 3]")
    run_grid(load_grid(grid_path), workdir, progress=False)
    err = [line for line in capsys.readouterr().err.splitlines() if "changed since" in line]
    assert len(err) == 1 and err[0].startswith("vqav2: 2 finished cell(s)") and len(starts(workdir)) == 2
