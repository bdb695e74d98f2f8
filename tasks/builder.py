"""The TFDS builder every plugin declares its data with: features and split generators over the official
raw files in a manual directory. `Task.prepare` runs the generators and writes the examples itself
(tasks/records.py: array_record, each image once, no TensorFlow); TFDS's own writer is not used."""

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
        # The splits to prepare (None: all). Set by Task.prepare, so that scoring the eval split does not
        # need the train split's raw files; a plugin skips an unwanted split's files with `wanted`.
        self.only_splits: frozenset[str] | None = None
        super().__init__(file_format="array_record", **kwargs)

    def _log_download_bytes(self) -> None:
        """TFDS prints "Downloading and preparing dataset Unknown size ..." to stdout; a manual-download
        builder downloads nothing, and a `--json` command's stdout must hold only its JSON."""

    def _log_download_done(self) -> None:
        """Likewise "Dataset ... downloaded and prepared to ...": the harness says what it prepares."""

    def wanted(self, split: str) -> bool:
        return self.only_splits is None or split in self.only_splits

    def __init_subclass__(cls, **kwargs: Any):
        """Every plugin's `_split_generators` returns only the wanted splits, so TFDS never reads the
        others' files (their generators are lazy)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("_split_generators")
        if own is not None and not getattr(own, "_filters_splits", False):
            def _split_generators(self, dl_manager, _own=own):
                return {k: v for k, v in _own(self, dl_manager).items() if self.wanted(k)}
            _split_generators._filters_splits = True
            cls._split_generators = _split_generators
