"""The TFDS builder every plugin's data goes through: official raw files in a manual directory ->
array_record files with images as PNG/JPEG bytes, which TFDS writes and reads without tensorflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds


class RawFilesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the plugins' builders: array_record output, the manual directory kept at hand.

    `code_path` is None because TFDS otherwise looks for a checksums file beside a packaged builder's
    code (through importlib_resources); a manual-download builder has no checksums.
    """

    VERSION = tfds.core.Version("1.0.0")
    code_path = None

    def __init__(self, *, manual_dir: str | Path | None = None, **kwargs: Any):
        self._manual_dir = Path(manual_dir) if manual_dir is not None else None
        super().__init__(file_format="array_record", **kwargs)
