"""Keep the dataset and image libraries off stdout and quiet on stderr.

TFDS prints "Downloading and preparing dataset Unknown size ..." through absl logging and progress bars
on first use, and OpenCV and TensorFlow log on import; a `--json` command's stdout must hold only its
JSON document, and a run's stderr only what the harness says.
"""

from __future__ import annotations

import logging
import os

_done = False


def quiet_environment() -> None:
    """Environment variables the libraries read at import: call before importing them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_VIDEOIO_DEBUG", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def quiet_tfds() -> None:
    """TFDS progress bars off and its absl logging at ERROR (idempotent)."""
    global _done
    quiet_environment()
    if _done:
        return
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    tfds.disable_progress_bar()
    absl_logging.set_verbosity(absl_logging.ERROR)
    for name in ("absl", "tensorflow_datasets", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _done = True
