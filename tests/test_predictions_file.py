"""What `score` says about a predictions file it cannot use: the line, and what that line holds instead."""

from __future__ import annotations

import re

import pytest

from harness.rescore import read_predictions
from tasks.base import DataError

GOOD = b'{"id": 1, "prediction": "a"}\n'


def _read(tmp_path, content: bytes):
    path = tmp_path / "preds.jsonl"
    path.write_bytes(content)
    return path, lambda: read_predictions(path)


def test_a_byte_order_mark_is_accepted(tmp_path):
    """Windows editors (Notepad, Excel's "CSV UTF-8") write a UTF-8 BOM first; it is not part of the JSON."""
    _, read = _read(tmp_path, b"\xef\xbb\xbf" + GOOD + b'{"id": 2, "prediction": "b"}\n')
    assert read() == [{"id": "1", "prediction": "a"}, {"id": "2", "prediction": "b"}]


@pytest.mark.parametrize("line,expected", [
    (b'{"id": 2, "prediction": 7}', r':2: "prediction" is a JSON number \(7\); expected .* string'),
    (b'{"id": 2, "prediction": ["a", "b"]}', r':2: "prediction" is a JSON array \(\["a", "b"\]\)'),
    (b'{"id": 2, "prediction": null}', r':2: "prediction" is a JSON null'),
    (b'{"id": 2, "prediction": {"text": "a"}}', r':2: "prediction" is a JSON object'),
    (b'{"id": 2}', r":2: no 'prediction' \(keys \['id'\]\)"),
    (b'{"prediction": "a"}', r":2: no 'id' \(keys \['prediction'\]\)"),
    (b'["a"]', r":2: expected .*, got a JSON array"),
])
def test_a_wrong_value_names_its_type_and_line(tmp_path, line, expected):
    path, read = _read(tmp_path, GOOD + line + b"\n" + GOOD.replace(b"1", b"3"))
    with pytest.raises(DataError, match=re.escape(str(path)) + expected):
        read()


def test_non_utf8_names_the_line_and_byte_offset(tmp_path):
    content = GOOD + b'{"id": 2, "prediction": "caf\xe9"}\n'
    path, read = _read(tmp_path, content)
    offset = content.index(b"\xe9")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: not UTF-8 text (byte 0xe9 at byte offset {offset} "
                                                  f"of the file, {offset - len(GOOD)} of the line)")):
        read()
    path, read = _read(tmp_path, b"\xef\xbb\xbf" + content)  # offsets count the BOM's bytes too
    with pytest.raises(DataError, match=f"byte offset {offset + 3} of the file"):
        read()


def test_only_a_bad_last_line_is_called_truncated(tmp_path):
    path, read = _read(tmp_path, GOOD + b'{"id": 2, "predic')
    with pytest.raises(DataError, match=re.escape(f"{path}:2: malformed JSON line") + r".*a truncated file\?"):
        read()
    _, read = _read(tmp_path, b'{"id": 2, prediction: "a"}\n' + GOOD)
    with pytest.raises(DataError, match=r":1: malformed JSON line: [^(]*$"):
        read()
