"""The prepared-data format: one split of a task as array_record files, written and read without TensorFlow.

A plugin still declares its data as a TFDS builder (features + `_split_generators`, tasks/builder.py), but
the examples it generates are written here with array_record's own writer, not TFDS's: TFDS's Writer
spills any split over 1 GiB through `tf.io.gfile` (so real datasets needed TensorFlow), and its records
hold each example's image, so VQAv2's five questions per COCO image stored the image five times.

One prepared split is a folder:

    meta.json              format, task, split, counts, the features (name -> kind) and the bytes written
    examples.array_record  one record per example, in the order the plugin generates them: a UTF-8 JSON
                           object of the example's fields; an Image field holds the index of its image
                           in images.array_record
    images.array_record    one record per distinct image (a file named by several examples is stored
                           once): its encoded bytes, as the raw files ship them (tasks/images.py)
    order.npy              int64, position -> record: TFDS's order (the md5 of the example key salted
                           with the split name), so a slice such as "train[-5%:]" selects the same
                           examples as on data TFDS prepared

Why JSON records and no TFDS metadata: the records hold only text and numbers (the images are apart), so
JSON costs little, is read by anything, and round-trips every feature the plugins use; TFDS's own files
(`dataset_info.json`, `features.json`) would promise `tfds.builder_from_directory` records serialised as
tf.train.Example, which these are not. Both files use `group_size:1`, as TFDS does, so any record is one
seek away (grain's ArrayRecordDataSource reads them).
"""

from __future__ import annotations

import bisect
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.errors import DataError
from tasks.images import LazyImage, encoded_bytes

FORMAT = "paligemma-transfer prepared split"
FORMAT_VERSION = 1
META, EXAMPLES, IMAGES, ORDER = "meta.json", "examples.array_record", "images.array_record", "order.npy"
# Images are already compressed (JPEG, PNG): compressing them again costs time and saves nothing.
_IMAGE_OPTIONS, _EXAMPLE_OPTIONS = "group_size:1,uncompressed", "group_size:1"


def _features():
    import tensorflow_datasets as tfds

    return tfds.features


def spec(feature: Any) -> dict[str, Any]:
    """A TFDS feature as JSON for meta.json; reading decodes from it alone, without TFDS:
    {"kind": "image", "channels", "encoding"}, {"kind": "text"}, {"kind": "class_label"},
    {"kind": "tensor", "dtype", "shape"}, {"kind": "sequence", "of": spec}, {"kind": "dict", "fields": {...}}."""
    f = _features()
    if isinstance(feature, f.Image):
        return {"kind": "image", "channels": int(feature.shape[-1] or 3), "encoding": feature.encoding_format or "png"}
    if isinstance(feature, f.Text):
        return {"kind": "text"}
    if isinstance(feature, f.ClassLabel):
        return {"kind": "class_label"}
    if isinstance(feature, f.Sequence):
        return {"kind": "sequence", "of": spec(feature.feature)}
    if isinstance(feature, f.FeaturesDict):
        return {"kind": "dict", "fields": {k: spec(v) for k, v in feature.items()}}
    if isinstance(feature, f.Tensor):
        return {"kind": "tensor", "dtype": np.dtype(feature.np_dtype).name, "shape": list(feature.shape)}
    raise DataError(f"feature {feature!r} is not supported by the prepared-data format (tasks/records.py)")


def encode_value(feature: Any, value: Any, where: str) -> Any:
    """A non-image value from a plugin's generator -> JSON (what TFDS's feature would have accepted)."""
    f = _features()
    if isinstance(feature, f.Text):
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    if isinstance(feature, f.ClassLabel):
        return feature.str2int(value) if isinstance(value, str) else int(value)
    if isinstance(feature, f.Sequence):
        return [encode_value(feature.feature, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(feature, f.FeaturesDict):
        return {k: encode_value(sub, _get(value, k, where), f"{where}.{k}") for k, sub in feature.items()}
    if isinstance(feature, f.Image):
        raise DataError(f"{where}: images are supported as top-level fields only")
    if isinstance(feature, f.Tensor):
        try:
            return np.asarray(value, dtype=feature.np_dtype).tolist()
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: expected {spec(feature)}, got {value!r:.80} ({e})") from None
    raise DataError(f"{where}: feature {feature!r} is not supported by the prepared-data format")


def decode_value(kind: Mapping[str, Any], value: Any) -> Any:
    """JSON -> what the plugin's `example(record)` reads, as TFDS's numpy data source gives it (text as str,
    which `tasks.base.text` reads like TFDS's bytes; tensors as numpy arrays)."""
    k = kind["kind"]
    if k == "text":
        return value
    if k == "class_label":
        return np.int64(value)
    if k == "sequence":
        inner = kind["of"]
        if inner["kind"] == "tensor":
            return _array(inner["dtype"], [None, *inner["shape"]], value)
        return [decode_value(inner, v) for v in value]
    if k == "dict":
        return {name: decode_value(sub, value[name]) for name, sub in kind["fields"].items()}
    if k == "tensor":
        return _array(kind["dtype"], kind["shape"], value)
    raise DataError(f"prepared data holds a feature of unknown kind {k!r}: prepare it again")


def _array(dtype: str, shape: list, value: Any) -> Any:
    array = np.asarray(value, dtype=dtype)
    if array.size == 0 and len(shape) > 1 and None not in shape[1:]:
        array = array.reshape((0, *shape[1:]))
    return array[()] if not shape else array


def _get(value: Any, key: str, where: str) -> Any:
    if not isinstance(value, Mapping) or key not in value:
        raise DataError(f"{where}: missing field {key!r}")
    return value[key]


def _writer(path: Path, options: str):
    from array_record.python.array_record_module import ArrayRecordWriter

    return ArrayRecordWriter(str(path), options)


class SplitWriter:
    """Writes one split's examples into `folder` as they come, each image once; `close()` -> meta."""

    def __init__(self, folder: Path, features: Any, *, task: str, split: str):
        from tensorflow_datasets.core.hashing import Hasher

        self.folder, self.features, self.task, self.split = Path(folder), features, task, split
        self.image_fields = {k: v for k, v in features.items() if isinstance(v, _features().Image)}
        self._hasher = Hasher(split)  # TFDS's example order (tensorflow_datasets/core/shuffle.py)
        self._hkeys: list[int] = []
        self._image_index: dict[str, int] = {}
        self._examples = _writer(self.folder / EXAMPLES, _EXAMPLE_OPTIONS)
        self._images = _writer(self.folder / IMAGES, _IMAGE_OPTIONS) if self.image_fields else None
        self.bytes = {"examples": 0, "images": 0}

    def add(self, key: Any, example: Mapping[str, Any]) -> None:
        where = f"{self.task}: split {self.split!r}: example {key}"
        record = {}
        for name, feature in self.features.items():
            value = _get(example, name, where)
            if name in self.image_fields:
                record[name] = self._image(value, feature.encoding_format or "png", f"{where}: field {name!r}")
            else:
                record[name] = encode_value(feature, value, f"{where}: field {name!r}")
        data = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
        self._examples.write(data)
        self.bytes["examples"] += len(data)
        self._hkeys.append(self._hasher.hash_key(key))

    def _image(self, value: Any, encoding: str, where: str) -> int:
        if isinstance(value, str | os.PathLike):  # known already: not read again
            known = self._image_index.get(f"file:{Path(value).resolve()}")
            if known is not None:
                return known
        identity, data = encoded_bytes(value, encoding, where)
        index = self._image_index.get(identity)
        if index is None:
            index = self._image_index[identity] = len(self._image_index)
            self._images.write(data)
            self.bytes["images"] += len(data)
        return index

    def close(self) -> dict[str, Any]:
        self._examples.close()
        if self._images is not None:
            self._images.close()
        n = len(self._hkeys)
        if n == 0:
            raise DataError(f"{self.task}: split {self.split!r} has no examples")
        order = np.asarray(sorted(range(n), key=self._hkeys.__getitem__), dtype=np.int64)
        for a, b in zip(order[:-1], order[1:]):
            if self._hkeys[a] == self._hkeys[b]:
                raise DataError(f"{self.task}: split {self.split!r}: examples {a} and {b} have the same key")
        np.save(self.folder / ORDER, order)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": self.task, "split": self.split,
                "num_examples": n, "num_images": len(self._image_index),
                "features": spec(self.features)["fields"], "bytes": self.bytes}
        (self.folder / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return meta


def write_split(folder: Path, features: Any, examples: Iterable[tuple[Any, Mapping[str, Any]]], *,
                task: str, split: str) -> dict[str, Any]:
    """Write the (key, example) pairs of one split into `folder` (which exists); returns its meta."""
    writer = SplitWriter(folder, features, task=task, split=split)
    try:
        for key, example in examples:
            writer.add(key, example)
    except BaseException:
        writer._examples.close()
        if writer._images is not None:
            writer._images.close()
        raise
    return writer.close()


def read_meta(folder: Path) -> dict[str, Any]:
    meta = json.loads((Path(folder) / META).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{folder}: not a prepared split of format {FORMAT!r} v{FORMAT_VERSION}")
    return meta


class PreparedSplit:
    """Random access to one prepared split: `len`, `record(i)` (fields decoded, images lazy) and
    `fields(i)` (the stored JSON, no image read). Needs neither TFDS nor the plugin; files open on first
    use, so it pickles as its folder (grain's worker processes)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        self.kinds: dict[str, dict[str, Any]] = self.meta["features"]
        self._order: np.ndarray | None = None
        self._examples = self._images = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_order": None, "_examples": None, "_images": None}

    def __len__(self) -> int:
        return int(self.meta["num_examples"])

    def _record_index(self, position: int) -> int:
        if self._order is None:
            self._order = np.load(self.folder / ORDER, mmap_mode="r")
        return int(self._order[position])

    def _source(self):
        if self._examples is None:
            from grain.sources import ArrayRecordDataSource

            self._examples = ArrayRecordDataSource([str(self.folder / EXAMPLES)])
        return self._examples

    def fields(self, position: int) -> dict[str, Any]:
        return json.loads(self._source()[self._record_index(position)])

    def many_fields(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        """`fields` of many positions in one parallel read (several times faster than one by one)."""
        raw = self._source().__getitems__([self._record_index(p) for p in positions])
        return [json.loads(r) for r in raw]

    def image_bytes(self, index: int) -> bytes:
        if self._images is None:
            from grain.sources import ArrayRecordDataSource

            self._images = ArrayRecordDataSource([str(self.folder / IMAGES)])
        return self._images[index]

    def record(self, position: int) -> dict[str, Any]:
        return self._decode(self.fields(position))

    def records(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        return [self._decode(stored) for stored in self.many_fields(positions)]

    def _decode(self, stored: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, kind in self.kinds.items():
            if kind["kind"] == "image":
                out[name] = LazyImage(_ImageLoader(self, stored[name]), kind["channels"])
            else:
                out[name] = decode_value(kind, stored[name])
        return out


_CHUNK = 1024  # records per read when iterating
_TERM = re.compile(r"^(\w+)\[(\d+):(\d+)\]$")


class RecordView(Sequence[dict]):
    """The records of a resolved split expression ("train[0:6]+validation[0:4]", tasks/splits.py) over
    prepared splits, as one sequence: len() and random access."""

    def __init__(self, splits: Mapping[str, PreparedSplit], expression: str):
        self._parts: list[tuple[PreparedSplit, int]] = []
        self._starts: list[int] = []
        total = 0
        for term in expression.split("+"):
            match = _TERM.match(term.strip())
            if not match:
                raise ValueError(f"expected a resolved split expression (name[lo:hi]+...), got {expression!r}")
            name, lo, hi = match.group(1), int(match.group(2)), int(match.group(3))
            self._parts.append((splits[name], lo))
            self._starts.append(total)
            total += hi - lo
        self._len = total

    def __len__(self) -> int:
        return self._len

    def _locate(self, index: int) -> tuple[PreparedSplit, int]:
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(f"index {index} out of range for {self._len} records")
        part = bisect.bisect_right(self._starts, index) - 1
        split, lo = self._parts[part]
        return split, lo + index - self._starts[part]

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        split, position = self._locate(index)
        return split.record(position)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Many records, read in one parallel read per split (grain's batched access)."""
        located = [self._locate(i) for i in indices]
        out: list[Any] = [None] * len(located)
        for split in {id(s): s for s, _ in located}.values():
            mine = [k for k, (s, _) in enumerate(located) if s is split]
            for k, record in zip(mine, split.records([located[k][1] for k in mine])):
                out[k] = record
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for start in range(0, self._len, _CHUNK):
            yield from self.__getitems__(range(start, min(start + _CHUNK, self._len)))


class _ImageLoader:
    """`split.image_bytes(index)` as a picklable callable."""

    __slots__ = ("split", "index")

    def __init__(self, split: PreparedSplit, index: int):
        self.split, self.index = split, index

    def __call__(self) -> bytes:
        return self.split.image_bytes(self.index)
