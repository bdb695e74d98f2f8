"""Rescore a predictions JSONL against a task's split, without a model (`paligemma-transfer score`)."""

from __future__ import annotations

from pathlib import Path

from harness.evaluate import score_rows
from tasks.base import DataError, Scores, read_jsonl
from tasks.registry import get_task


def read_predictions(path: Path) -> list[dict]:
    """JSONL lines {"id": ..., "prediction": "..."}; an error names the file and line of a bad one."""
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} does not exist")
    rows = []
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for lineno, row in enumerate(read_jsonl(path), 1):
        if "id" not in row or not isinstance(row.get("prediction"), str):
            raise DataError(f"{path}: line {_line_of(lines, lineno)}: expected "
                            '{"id": ..., "prediction": "<text>"}, got keys ' f"{sorted(row)}")
        rows.append({"id": str(row["id"]), "prediction": row["prediction"]})
    return rows


def _line_of(lines: list[str], nth_object: int) -> int:
    """The file line of the nth non-empty line (read_jsonl skips blank lines)."""
    seen = 0
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            seen += 1
            if seen == nth_object:
                return lineno
    return nth_object


def rescore(task_name: str, data_dir: Path, predictions: Path, split: str = "eval") -> Scores:
    task = get_task(task_name)
    rows = read_predictions(predictions)
    references = task.references(data_dir, split)
    scores, _ = score_rows(task, rows, references)
    return scores
