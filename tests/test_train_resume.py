"""A fine-tune killed with SIGKILL resumes from its last orbax checkpoint and ends exactly where an
uninterrupted run ends: the data pipeline is indexed by step and the dropout rng is folded by step."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from harness.cell.data import TextSpec, train_batches
    from harness.cell.train import TrainConfig, train
    from model import checkpoint
    from model.config import get_config
    from model.paligemma import init_params
    from model.tokenizer import Tokenizer
    from tasks.base import Example
    import jax

    workdir, slow = Path(sys.argv[1]), sys.argv[2] == "slow"
    rng = np.random.default_rng(0)
    examples = [Example(id=str(i), image=rng.integers(0, 256, (40, 40, 3), dtype=np.uint8),
                        prefix=f"answer en what color {i}", targets=("red", "blue"), reference=None)
                for i in range(12)]
    tok = Tokenizer("model/assets/nano_tokenizer.model")
    config = get_config("nano-s-32")
    data = train_batches(examples, tok, TextSpec(16, False, 32), batch_size=4, num_steps=12, seed=1)
    batches = data
    if slow:  # give the parent time to kill us between checkpoints
        class Slow:
            def __len__(self): return len(data)
            def __getitem__(self, i):
                time.sleep(0.4)
                return data[i]
        batches = Slow()
    cfg = TrainConfig(lr=1e-3, num_steps=12, dropout=0.1, checkpoint_every=3, seed=0)
    params, summary = train(config, init_params(config, jax.random.key(0)), batches, cfg,
                            workdir=workdir, progress=False)
    checkpoint.save_npz(str(workdir / "final.npz"), params)
    print("resumed_from", summary["resumed_from"])
""")


def _start(workdir: Path, mode: str) -> subprocess.Popen:
    """Output goes to files: a pipe nobody reads would fill up with JAX's warnings and block the child."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "stdout.txt", "w") as out, open(workdir / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(workdir), mode], cwd=REPO,
                                stdout=out, stderr=err)
    proc.workdir = workdir
    return proc


def _finish(proc: subprocess.Popen) -> str:
    proc.wait(timeout=300)
    assert proc.returncode == 0, (proc.workdir / "stderr.txt").read_text()[-2000:]
    return (proc.workdir / "stdout.txt").read_text()


def _finished_steps(ckpt: Path) -> list[int]:
    return sorted(int(p.name) for p in ckpt.glob("*") if p.name.isdigit()) if ckpt.exists() else []


def test_sigkilled_training_resumes_to_the_same_params(tmp_path):
    reference = _start(tmp_path / "ref", "fast")
    killed = _start(tmp_path / "run", "slow")
    deadline = time.time() + 240
    while not _finished_steps(tmp_path / "run" / "ckpt") and time.time() < deadline:
        assert killed.poll() is None, "the run ended before it could be killed"
        time.sleep(0.1)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert _finished_steps(tmp_path / "run" / "ckpt"), "no checkpoint was written before the deadline"
    assert not (tmp_path / "run" / "final.npz").exists()

    out = _finish(_start(tmp_path / "run", "fast"))
    assert int(out.split("resumed_from")[1].split()[0]) > 0
    _finish(reference)

    a, b = np.load(tmp_path / "ref" / "final.npz"), np.load(tmp_path / "run" / "final.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    log = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert log[0] == "step,loss,grad_norm,examples_per_s" and log[-1].startswith("12,")
