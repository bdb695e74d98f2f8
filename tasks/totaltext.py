"""Total-Text: curved scene text, the paper's second text-spotting evaluation (Table 2: 3B 896 px, F1 74.2).

The same model, target format, recipe and metric as ICDAR'15 (tasks/icdar15.py): the paper trains one
model on the text-spotting mixture (App. B) and scores it on both test sets with the HierText protocol.
Raw files: tasks/spotting.py (polygon .txt ground truth, `#` don't-care). Ground-truth polygons keep all
their vertices for scoring; targets use their minimum rotated rectangles.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.base import Example
from tasks.icdar15 import Icdar15
from tasks.spotting import TOTALTEXT_DOWNLOAD, TotalTextBuilder, record_example


class TotalText(Icdar15):
    name = "totaltext"
    description = ("Total-Text curved scene text: word polygons + transcriptions, scored end to end with the "
                   "HierText protocol (IoU >= 0.5, exact case-sensitive text).")
    version = 1  # bump with any change to prompt, parse, metric, recipe or demo data
    # 1,255 train and 300 test images; no validation split: minival holds out 10% of train, as ICDAR'15.
    splits = {"train": "train[:90%]", "minival": "train[90%:]", "eval": "test", "test": "test"}
    download_instructions = TOTALTEXT_DOWNLOAD

    def builder(self, manual_dir: str | Path, data_dir: str | Path):
        return TotalTextBuilder(data_dir=str(data_dir))

    def example(self, record: Mapping[str, Any]) -> Example:
        return record_example(record)

    def write_demo(self, manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
        from tasks.demo.spotting import write_totaltext_demo

        write_totaltext_demo(manual_dir, num_train=num_train, num_eval=num_eval, seed=seed)
