"""Rescore a predictions JSONL against a task's split, without a model (`paligemma-transfer score`).

Only the split scored is prepared (tasks/prepared.py), so scoring `eval` needs only the eval raw files.
A predictions file that is empty, repeats an id, names an id the split does not have, holds a prediction
that is not a string, or is not UTF-8 is an error naming the file and the line (and, for bytes that are
not UTF-8, their offset); a UTF-8 byte-order mark is accepted. Ids of the split with no prediction are
scored as misses, and the counts say how many.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.cell.evaluate import score_rows
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


EXPECTED = '{"id": ..., "prediction": "<text>"}'


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text (a leading byte-order mark, as some Windows editors write, is dropped); an error names the
    line and the byte offset of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        start = e.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1)
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {data[start]:#04x} at byte offset {start} of the "
                        f"file, {column} of the line); expected JSON lines {EXPECTED}") from None


def _row(path: Path, lineno: int, line: str, last: bool) -> dict:
    """One JSON line -> {"id", "prediction"}; an error names the line and what it holds instead."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        hint = " (a truncated file?)" if last else ""
        raise DataError(f"{path}:{lineno}: malformed JSON line: {e.msg}{hint}") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}:{lineno}: expected {EXPECTED}, got a JSON {_json_type(row)}")
    if "id" not in row or "prediction" not in row:
        absent = " and ".join(repr(k) for k in ("id", "prediction") if k not in row)
        raise DataError(f"{path}:{lineno}: no {absent} (keys {sorted(row)}); expected {EXPECTED}")
    if not isinstance(row["prediction"], str):
        raise DataError(f"{path}:{lineno}: \"prediction\" is a JSON {_json_type(row['prediction'])} "
                        f"({json.dumps(row['prediction'])[:60]}); expected the model's output text as a string")
    return row


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type (what the file holds, not Python's name for it)."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)


def read_predictions(path: Path) -> list[dict]:
    """JSONL lines {"id": ..., "prediction": "..."}; an error names the file and line of a bad one."""
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} does not exist")
    lines = _decode(path, path.read_bytes()).splitlines()
    last = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
    rows, first_line = [], {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = _row(path, lineno, line, lineno == last)
        ex_id = str(row["id"])
        if ex_id in first_line:
            raise DataError(f"{path}: lines {first_line[ex_id]} and {lineno} both predict id {ex_id!r}")
        first_line[ex_id] = lineno
        rows.append({"id": ex_id, "prediction": row["prediction"]})
    if not rows:
        raise DataError(f"{path}: no predictions (the file is empty); expected JSON lines {EXPECTED}")
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
