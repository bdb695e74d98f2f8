"""TextOCR as a text-spotting source: word polygons and transcriptions on TextVQA's images, one of the
train sets of the paper's text-spotting mixture (App. B; tasks/icdar15.py `train_mixture`).

The paper reports no TextOCR number; minival is held out of train and eval reads val, as ICDAR'15's plugin.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.base import Example
from tasks.icdar15 import Icdar15
from tasks.spotting import TEXTOCR_DOWNLOAD, TextOcrBuilder, record_example


class TextOcr(Icdar15):
    name = "textocr"
    description = "TextOCR words (polygons + text) in ICDAR'15's text-spotting format; a mixture source."
    version = 1  # bump with any change to prompt, parse, metric, recipe or demo data
    splits = {"train": "train[:95%]", "minival": "train[95%:]", "eval": "val", "test": "val"}
    download_instructions = TEXTOCR_DOWNLOAD

    def builder(self, manual_dir: str | Path, data_dir: str | Path):
        return TextOcrBuilder(data_dir=str(data_dir))

    def example(self, record: Mapping[str, Any]) -> Example:
        return record_example(record)

    def write_demo(self, manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
        from tasks.demo.spotting import write_textocr_demo

        write_textocr_demo(manual_dir, num_train=num_train, num_eval=num_eval, seed=seed)
