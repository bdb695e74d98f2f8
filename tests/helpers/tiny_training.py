"""What the training-loop tests share: a nano model's base params and step-indexed batches of a few
coloured-square examples, and a batch sequence that raises at one step (a run killed mid-way)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[2]


def nano_setup(steps: int):
    """(nano-s-32 config, its random-init params as numpy arrays, `steps` batches of 2 examples)."""
    from harness.cell.data import TextSpec, train_batches
    from model.config import get_config
    from model.paligemma import init_params
    from model.tokenizer import Tokenizer
    from tasks.base import Example

    rng = np.random.default_rng(0)
    examples = [Example(id=str(i), image=rng.integers(0, 256, (24, 24, 3), dtype=np.uint8),
                        prefix=f"answer en color {i}", targets=("red", "blue"), reference=None)
                for i in range(8)]
    config = get_config("nano-s-32")
    batches = train_batches(examples, Tokenizer(str(REPO / "model/assets/nano_tokenizer.model")),
                            TextSpec(12, False, 32), batch_size=2, num_steps=steps, seed=1)
    return config, jax.tree_util.tree_map(np.asarray, init_params(config, jax.random.key(0))), batches


class FailAt:
    """Batches that raise at one step: a run interrupted after some steps ran (and were logged)."""

    def __init__(self, batches, step: int):
        self.batches, self.step = batches, step

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        if i == self.step:
            raise RuntimeError("interrupted")
        return self.batches[i]
