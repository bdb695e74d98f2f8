"""Rescore a predictions JSONL against a task's split, without a model (`paligemma-transfer score`).

Only the split scored is prepared (tasks/prepared.py), so scoring `eval` needs only the eval raw files.
A predictions file that is empty, repeats an id, names an id the split does not have, or is not UTF-8 is
an error naming the file (and the lines); ids of the split with no prediction are scored as misses, and
the counts say how many.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.evaluate import score_rows
from tasks.base import DataError, Scores
from tasks.registry import get_task


@dataclass(frozen=True)
class Rescored:
    scores: Scores
    num_predictions: int
    num_references: int
    missing: int  # references with no prediction (scored as misses)

    def summary(self, task: str, split: str) -> str:
        return (f"{task} {split}: {self.num_predictions} prediction(s) matched of {self.num_references} "
                f"reference(s); {self.missing} reference(s) had no prediction (scored as misses); "
                f"{self.scores.num_unparsable} unparsable output(s)")


def read_predictions(path: Path) -> list[dict]:
    """JSONL lines {"id": ..., "prediction": "..."}; an error names the file and line of a bad one."""
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} does not exist")
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); expected JSON lines "
                        '{"id": ..., "prediction": "<text>"}') from None
    rows, first_line = [], {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON line: {e.msg} (a truncated file?)") from None
        if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("prediction"), str):
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise DataError(f"{path}: line {lineno}: expected " '{"id": ..., "prediction": "<text>"}, got '
                            f"{'keys ' if isinstance(row, dict) else ''}{keys}")
        ex_id = str(row["id"])
        if ex_id in first_line:
            raise DataError(f"{path}: lines {first_line[ex_id]} and {lineno} both predict id {ex_id!r}")
        first_line[ex_id] = lineno
        rows.append({"id": ex_id, "prediction": row["prediction"]})
    if not rows:
        raise DataError(f"{path}: no predictions (the file is empty); expected JSON lines "
                        '{"id": ..., "prediction": "<text>"}')
    return rows


def rescore(task_name: str, data_dir: Path, predictions: Path, split: str = "eval", *,
            cache_dir: Path | None = None) -> Rescored:
    task = get_task(task_name)
    rows = read_predictions(predictions)
    references = task.references(data_dir, split, cache_dir=cache_dir)
    unknown = [r["id"] for r in rows if r["id"] not in references]
    if unknown:
        raise DataError(f"{predictions}: {len(unknown)} prediction id(s) are not in {task_name}'s {split} "
                        f"split, e.g. {unknown[:3]}")
    scores, _ = score_rows(task, rows, references)
    return Rescored(scores, num_predictions=len(rows), num_references=len(references),
                    missing=len(references) - len(rows))
