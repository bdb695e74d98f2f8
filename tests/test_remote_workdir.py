"""Workdirs in a bucket: `run --workdir gs://bucket/run` and `tables gs://bucket/run` through etils.epath's
real gs:// code path, served from a local folder (tests/helpers/fake_bucket.py); and the object-store
lease that stands in for O_CREAT | O_EXCL there (harness/run/locks.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from harness import cli
from harness.run import locks
from harness.run.locks import ObjectStoreLock, open_lock
from results.paths import as_path, write_object
from tests.helpers.fake_bucket import serve_as_gs

REPO = Path(__file__).resolve().parents[1]

GRID = """\
name: remote
demo: true
tasks: [vqav2]
sizes: [nano-s, nano-m]
resolutions: [32, 64]
lrs: [1.0e-4, 1.0e-3]
protocol:
  final: {seeds: 2}
data_root: DATA
checkpoints: random
runner: tests.helpers.fake_runner:run
"""
CELLS = 4 + 8  # sweep: 2 sizes x 2 lrs at the lowest resolution; final: 2 sizes x 2 resolutions x 2 seeds
TABLE_FILES = ("tables.md", "table13.csv", "table13.tex", "lr_sweep.csv", "lr_sweep.tex", "sensitivity.csv",
               "other_records.csv")


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """gs://... served from tmp_path/bucket; leases settle fast; no matmul benchmark after a run."""
    monkeypatch.chdir(tmp_path)  # a path that lost its "gs://" would land here, as gs:/...
    monkeypatch.setattr(locks, "SETTLE_S", 0.05)
    monkeypatch.setattr(cli, "_matmul_peak_gflops", lambda: 0.0)
    with serve_as_gs(tmp_path / "bucket") as root:
        yield root


@pytest.fixture
def grid_file(tmp_path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.replace("DATA", str(tmp_path / "data")))
    return path


def _starts(log: Path) -> int:
    return sum(line.startswith("start ") for line in log.read_text().splitlines())


def test_run_and_tables_on_a_bucket_workdir(tmp_path, bucket, grid_file, capsys):
    assert cli.main(["run", str(grid_file), "--workdir", "gs://b/run", "--quiet"]) == 0
    stored = bucket / "b" / "run"
    assert len(list((stored / "records").glob("*.json"))) == CELLS
    assert len(list((stored / "predictions").glob("*.jsonl"))) == CELLS
    assert {"grid.yaml", "best_lr.json", "grid_cells.json", "tables"} <= {p.name for p in stored.iterdir()}
    assert len(json.loads((stored / "grid_cells.json").read_text())) == CELLS
    assert not list((stored / "cells").glob("*/lock"))  # every lease given back
    assert not (tmp_path / "gs:").exists()
    assert _starts(stored / "runner.log") == CELLS

    assert cli.main(["run", str(grid_file), "--workdir", "gs://b/run", "--quiet"]) == 0
    assert _starts(stored / "runner.log") == CELLS  # finished cells are skipped
    capsys.readouterr()
    assert cli.main(["run", str(grid_file), "--workdir", "gs://b/run", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert f"{CELLS} done; left to run: 0 cells" in plan

    local = tmp_path / "local" / "run"
    assert cli.main(["run", str(grid_file), "--workdir", str(local), "--quiet"]) == 0
    for name in TABLE_FILES:
        (stored / "tables" / name).unlink()
    capsys.readouterr()
    assert cli.main(["tables", "gs://b/run"]) == 0
    printed = capsys.readouterr().out
    for name in TABLE_FILES:
        assert (stored / "tables" / name).read_text() == (local / "tables" / name).read_text(), name
    assert printed == (local / "tables" / "tables.md").read_text() + "\n"
    assert (stored / "tables" / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tables_out_in_a_bucket_from_a_local_workdir(tmp_path, bucket, grid_file):
    local = tmp_path / "local" / "run"
    assert cli.main(["run", str(grid_file), "--workdir", str(local), "--quiet"]) == 0
    assert cli.main(["tables", str(local), "--out", "gs://b/report", "--baseline", "gs://b/missing"]) != 0
    assert cli.main(["tables", str(local), "--out", "gs://b/report"]) == 0
    assert (bucket / "b" / "report" / "tables.md").read_text() == (local / "tables" / "tables.md").read_text()


def _lease(host: str, beat: float) -> bytes:
    return json.dumps({"host": host, "pid": 1, "token": "t", "boot": "", "beat": beat}).encode()


def test_a_bucket_path_gets_the_object_store_lease(tmp_path, bucket):
    assert isinstance(open_lock("gs://b/run/cells/c/lock"), ObjectStoreLock)
    assert isinstance(open_lock(tmp_path / "lock"), locks.CellLock)


def test_two_lease_attempts_on_one_cell_one_wins(bucket, monkeypatch):
    monkeypatch.setattr(locks, "SETTLE_S", 0.3)  # both contenders write before either reads back
    path = "gs://b/run/cells/c/lock"
    contenders = [ObjectStoreLock(path), ObjectStoreLock(path)]
    won: list[bool] = [False, False]
    start = threading.Barrier(2)

    def attempt(i: int) -> None:
        start.wait()
        won[i] = contenders[i].acquire()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False, True]
    winner = contenders[won.index(True)]
    assert ObjectStoreLock(path).owner() == winner.me  # the loser wrote first and read the winner's token
    winner.release()
    assert not (bucket / "b" / "run" / "cells" / "c" / "lock").exists()


def test_a_stale_lease_is_taken_over_and_a_fresh_one_is_not(bucket):
    path = as_path("gs://b/run/cells/c/lock")
    write_object(path, _lease("another-host", time.time()))
    assert not ObjectStoreLock(path).acquire()  # its holder renewed it just now
    write_object(path, _lease("another-host", time.time() - locks.LEASE_S - 60))
    taker = ObjectStoreLock(path)
    assert taker.acquire() and taker.owner() == taker.me
    taker.release()
    write_object(path, b"not a lease")  # whatever it is, it holds nothing
    again = ObjectStoreLock(path)
    assert again.acquire()
    again.release()


def test_a_lease_of_a_dead_process_on_this_host_is_stale(bucket):
    path = as_path("gs://b/run/cells/c/lock")
    dead = {"host": socket.gethostname(), "pid": 2**22 + 7, "token": "t", "boot": "", "beat": time.time()}
    write_object(path, json.dumps(dead).encode())
    lock = ObjectStoreLock(path)
    assert lock.acquire()
    lock.release()


def test_the_holder_renews_its_lease(bucket, monkeypatch):
    monkeypatch.setattr(locks, "LEASE_S", 0.4)
    lock = ObjectStoreLock("gs://b/run/cells/c/lock")
    assert lock.acquire()
    first = json.loads(lock.path.read_text())["beat"]
    time.sleep(0.8)
    assert json.loads(lock.path.read_text())["beat"] > first  # its start is older than LEASE_S by now
    assert ObjectStoreLock(lock.path).owner() == lock.me
    lock.release()


def test_experiment_logs_of_a_cell_in_a_bucket(bucket):
    """train_log.csv, scalars.csv and the TensorBoard event files of a cell folder in a bucket: written
    through local copies, uploaded at flush and close, and continued by a resumed cell."""
    import jax

    from harness.cell.experiment_log import open_log
    from harness.cell.train import TrainConfig, train
    from model.paligemma import init_params
    from model.testing import tiny_config
    from tests.test_experiment_log import TRAIN_TAGS, read_tensorboard, tiny_batches

    config = tiny_config(sliding_window=None)
    batches = tiny_batches(3)
    log = open_log(["csv", "tensorboard"], "gs://b/run/cells/c", run_name="c")
    train(config, init_params(config, jax.random.key(0)), batches, TrainConfig(lr=1e-3, num_steps=3, seed=0),
          workdir="gs://b/run/cells/c", progress=False, metrics_log=log)
    log.scalars(3, {"eval/accuracy": 0.5})
    log.close()

    stored = bucket / "b" / "run" / "cells" / "c"
    assert [line.split(",")[0] for line in (stored / "train_log.csv").read_text().splitlines()] == \
        ["step", "1", "2", "3"]
    scalars = read_tensorboard(stored / "tensorboard")
    assert set(scalars) == TRAIN_TAGS | {"eval/accuracy"}
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3]

    resumed = open_log(["csv", "tensorboard"], "gs://b/run/cells/c", run_name="c")
    resumed.resume_at(2)  # the steps after the checkpoint are trained again
    resumed.scalars(3, {"train/loss": 0.125})
    resumed.close()
    rows = [line.split(",") for line in (stored / "scalars.csv").read_text().splitlines()]
    assert rows[0] == ["step", "name", "value"] and max(int(r[0]) for r in rows[1:]) == 3
    assert ["3", "train/loss", "0.125"] in rows and ["3", "eval/accuracy", "0.5"] not in rows
    assert len(list((stored / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert read_tensorboard(stored / "tensorboard")["train/loss"][-1] == (3, 0.125)


@pytest.mark.slow  # about a minute on two cores: a real nano model compiles, trains and decodes
def test_the_real_runner_writes_a_cell_in_a_bucket(tmp_path, bucket):
    """run_cell end to end on a bucket workdir: predictions, experiment logs and the record land in the
    bucket. Checkpoints are off (checkpoint_every: 0): orbax writes gs:// through tensorstore's own GCS
    driver, which the folder served as gs:// does not reach."""
    grid = tmp_path / "tiny.yaml"
    grid.write_text(f"""\
name: tiny
demo: {{num_train: 8, num_eval: 4, seed: 5}}
tasks: [vqav2]
sizes: [nano-s]
resolutions: [32]
lrs: [1.0e-3]
protocol:
  final: {{seeds: 1, split: eval}}
data_root: {tmp_path / 'data'}
checkpoints: random
overrides:
  all: {{steps: 2, batch_size: 4, text_len: 24, max_decode_len: 4, eval_batch_size: 4, checkpoint_every: 0,
        tokenizer: {REPO / 'model' / 'assets' / 'nano_tokenizer.model'}}}
""")
    assert cli.main(["run", str(grid), "--workdir", "gs://b/tiny", "--quiet"]) == 0
    stored = bucket / "b" / "tiny"
    (record,) = (stored / "records").glob("*.json")
    cell = stored / "cells" / record.stem
    assert json.loads(record.read_text())["steps"] == 2
    assert len((stored / "predictions" / f"{record.stem}.jsonl").read_text().splitlines()) == 4
    assert {"train_log.csv", "scalars.csv", "tensorboard"} <= {p.name for p in cell.iterdir()}
    assert "eval/accuracy" in (cell / "scalars.csv").read_text()
    assert (stored / "tables" / "tables.md").exists() and not (tmp_path / "gs:").exists()
