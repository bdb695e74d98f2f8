"""HierText as a text-spotting source: word polygons and transcriptions of its train split, one of the
train sets of the paper's text-spotting mixture (App. B; tasks/icdar15.py `train_mixture`).

The paper reports no HierText number; its splits here follow ICDAR'15's plugin (minival held out of train,
eval on validation) so the source can be checked on its own with the same metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.base import Example
from tasks.icdar15 import Icdar15
from tasks.spotting import HIERTEXT_DOWNLOAD, HierTextBuilder, record_example


class HierText(Icdar15):
    name = "hiertext"
    description = "HierText words (polygons + text) in ICDAR'15's text-spotting format; a mixture source."
    version = 1  # bump with any change to prompt, parse, metric, recipe or demo data
    splits = {"train": "train[:95%]", "minival": "train[95%:]", "eval": "validation", "test": "validation"}
    download_instructions = HIERTEXT_DOWNLOAD

    def builder(self, manual_dir: str | Path, data_dir: str | Path):
        return HierTextBuilder(data_dir=str(data_dir))

    def example(self, record: Mapping[str, Any]) -> Example:
        return record_example(record)

    def write_demo(self, manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
        from tasks.demo.spotting import write_hiertext_demo

        write_hiertext_demo(manual_dir, num_train=num_train, num_eval=num_eval, seed=seed)
