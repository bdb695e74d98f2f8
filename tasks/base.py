"""The task plugin contract: what a task declares so the harness can train, decode and score it.

A plugin is one file holding one `Task` subclass (plus its TFDS builder) and one line in
`tasks/registry.py` (or a `paligemma_transfer.tasks` entry point for third-party packages). In the
spirit of seqio's Task, each piece is a small pure function a test can call on one example:
`example` (prepared record -> prefix, targets, reference), `recipe`, `parse`, `score`.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tasks.errors import DataError  # noqa: F401 - the tasks import it from here
from tasks.images import LazyImage
from tasks.records import PreparedSplit, RecordView
from tasks.splits import resolve_split, split_names

# The paper's transfer lr sweep (§4.1): {0.03, 0.06, 0.1, 0.3, 0.6, 1.0, 3.0} x 1e-5.
PAPER_LR_GRID: tuple[float, ...] = (3e-7, 6e-7, 1e-6, 3e-6, 6e-6, 1e-5, 3e-5)


# The nano family stands for the paper's family point by point (model/config.py): a nano size or
# resolution uses the recipe of the paper size / resolution in the same position.
_PAPER_SIZE = {"nano-s": "3b", "nano-m": "10b", "nano-l": "28b"}
_PAPER_RES = {32: 224, 64: 448, 128: 896}


def paper_point(size: str, resolution: int) -> tuple[str, int]:
    """(size, resolution) of the paper family whose recipe applies: identity for '3b'..'28b'.

    Raises KeyError for a size or resolution neither family has."""
    from model.config import config_for

    config_for(size, resolution)  # validates, naming what the family has
    return _PAPER_SIZE.get(size, size), _PAPER_RES.get(resolution, resolution)


@dataclass(frozen=True)
class Recipe:
    """Fine-tuning and decoding hyper-parameters for one (size, resolution).

    Exactly one of `epochs` and `steps` is set. `weight_decay` is big_vision's: decoupled, applied to
    `kernel` params only and not multiplied by the learning rate.
    """

    batch_size: int
    lr: float
    epochs: float | None = None
    steps: int | None = None
    lr_grid: tuple[float, ...] = PAPER_LR_GRID
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    dropout: float = 0.0
    text_len: int = 32  # prefix + separator + suffix tokens, as big_vision's TEXT_LEN
    decode: str = "greedy"  # "greedy" or "beam"
    beam_size: int = 1
    max_decode_len: int = 32
    freeze_img: bool = False
    freeze_llm: bool = False
    pad_to_square: bool = False  # pad with white to a square before resizing (tables, molecules)
    # Resize with an antialiasing filter. big_vision's VQAv2 and DocVQA configs pass `antialias=True`,
    # its COCO captions config a plain `resize(res)` (docs/paligemma2-facts.md §2.1-§2.3).
    antialias: bool = True
    # Transfer soft-caps (facts §0.5). The paper: neither cap in stage 3 [P2 §3], our default.
    # big_vision's public transfer code turns only the final-logit cap off (`final_logits_softcap=0.0`,
    # "better for transfer"): `.replace(attn_logits_softcap=True)`, or the grid override of that name.
    final_logits_softcap: bool = False
    attn_logits_softcap: bool = False
    # How this point's lr is chosen (docs/fidelity.yaml). `lr_grid` is the paper's list, with its chosen
    # lr in it. `sweep_resolution`: the resolution (of this recipe's family) whose sweep picks the lr;
    # None is the grid's `protocol.sweep.resolution` (the paper's §4.1: sweep at 224 px, reuse at 448).
    # `sweep_per_point`: the paper re-swept at every (size, resolution) (MIMIC-CXR, App. B); then
    # `sweep_resolution` is the point's own resolution.
    sweep_resolution: int | None = None
    sweep_per_point: bool = False

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("a Recipe sets exactly one of epochs and steps")
        if self.decode not in ("greedy", "beam"):
            raise ValueError(f"Recipe.decode must be 'greedy' or 'beam', got {self.decode!r}")

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)

    @property
    def softcap_policy(self) -> str:
        """Which soft-cap choice this recipe makes, for records: "paper" (both caps off), "big_vision"
        (the public transfer code: attention cap on, final cap off) or "custom"."""
        caps = (self.attn_logits_softcap, self.final_logits_softcap)
        return {(False, False): "paper", (True, False): "big_vision"}.get(caps, "custom")

    def num_steps(self, num_train_examples: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, round(self.epochs * num_train_examples / self.batch_size))


class _DecodedOnRead:
    """The `image` field of Example: it holds an array or a LazyImage (tasks/images.py), and reading it gives
    the array, decoding a LazyImage on first read. So ids, prompts and references of prepared data are read
    without decoding a pixel, and an Example made from a plain array behaves as before."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> np.ndarray:
        if obj is None:
            raise AttributeError(self._slot)  # no class-level default: the field stays required
        value = obj.__dict__[self._slot]
        if isinstance(value, LazyImage):
            value = value.decode()
            obj.__dict__[self._slot] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self._slot] = value


@dataclass(frozen=True)
class Example:
    """One example as the harness sees it, made from a prepared record by `Task.example`.

    `targets` are the suffixes training may use (one is sampled per step, as big_vision's
    `choice`); `reference` is what the metric needs, JSON-serialisable. `image` may be given as a
    LazyImage: it is decoded when first read.
    """

    id: str
    image: np.ndarray = _DecodedOnRead()  # H x W x 3 uint8
    prefix: str
    targets: tuple[str, ...]
    reference: Any


@dataclass
class Scores:
    """Metric values plus counts of malformed model outputs (scored as misses, never raised)."""

    metrics: dict[str, float]
    num_examples: int
    num_unparsable: int = 0
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


OCR_PREFIX = "ocr"  # PaliGemma's OCR prompt


class LazyExamples(Sequence[Example]):
    """`make(item)` for each item, computed on access: views of a split (e.g. its OCR view) without
    decoding every image up front."""

    def __init__(self, items: Sequence[Any], make: Callable[[Any], Example]):
        self._items, self._make = items, make

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self._make(self._items[i])

    def __iter__(self) -> Iterator[Example]:
        return (self[i] for i in range(len(self)))


def ocr_example(ex: Example, words: Sequence[str]) -> Example:
    """`ex`'s image with its words, in reading order, as an OCR target."""
    line = " ".join(w for w in words if w)
    return Example(id=ex.id, image=ex.image, prefix=OCR_PREFIX, targets=(line,), reference=line)


class Task(abc.ABC):
    """Base class of a task plugin. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    description: ClassVar[str]
    headline: ClassVar[str]  # the metric key shown in tables, e.g. "accuracy", "anls", "cider"
    # Bump when the prompt, targets, parsing, metric, recipe or demo generator changes: it is part of every
    # cell's id, so finished cells of the old version are not reused. tests/test_plugin_versions.py fails
    # when a plugin's behaviour changes and this number does not.
    version: ClassVar[int] = 1
    # Paper roles -> TFDS split expressions (slicing allowed), e.g. {"train": "train[:-5%]", ...}.
    splits: ClassVar[Mapping[str, str]]
    # Which raw files the manual directory must hold, where to get them, and where to put them.
    download_instructions: ClassVar[str]

    # --- data ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def builder(self, manual_dir: str | Path, data_dir: str | Path):
        """The TFDS builder over `manual_dir`: its features and `_split_generators` say what a record holds
        (`prepare` writes the records, tasks/records.py); an Image feature's value may be the file's path."""

    @abc.abstractmethod
    def example(self, record: Mapping[str, Any]) -> Example:
        """A prepared record -> Example (prefix, training targets, metric reference). Images come as
        LazyImage: pass `record["image"]` on as the Example's image to keep it undecoded until read."""

    # --- recipe -------------------------------------------------------------------------------
    @abc.abstractmethod
    def recipe(self, size: str, resolution: int) -> Recipe:
        """The paper's recipe for this size and resolution (cite where each number comes from)."""

    # --- outputs ------------------------------------------------------------------------------
    def parse(self, text: str) -> Any:
        """Model text -> structured prediction. Must not raise on malformed text."""
        return text.strip()

    @abc.abstractmethod
    def score(self, predictions: Mapping[str, Any], references: Mapping[str, Any]) -> Scores:
        """Parsed predictions and references, both keyed by example id -> metrics.

        An id in `references` with no prediction is scored as an empty prediction.
        """

    # --- OCR view (optional) ---------------------------------------------------------------------
    def ocr_examples(self, manual_dir: str | Path, role: str = "train") -> Sequence[Example]:
        """The split's images with the text they show as the target (prefix `OCR_PREFIX`), for an
        OCR pretraining mixture (PaliGemma's stage 1 has one). Tasks whose images hold no text to read
        return nothing."""
        return ()

    # --- demo ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def write_demo(self, manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
        """Write demo-scale data into `manual_dir` in the task's official raw format."""

    # --- shared machinery ---------------------------------------------------------------------
    def prepare(self, manual_dir: str | Path, data_dir: str | Path | None = None, *,
                cache_dir: str | Path | None = None, splits: Iterable[str] | None = None) -> PreparedData:
        """The prepared splits of the raw files in `manual_dir`: at least `splits` (all by default), each
        prepared once, without TensorFlow, each image stored once (tasks/records.py).

        Without `data_dir` the data lives in one cache keyed by the raw files' content (tasks/prepared.py;
        `cache_dir` chooses it, default cache_root()/data): a moved or copied raw folder, `score` after `run`
        and every workdir find the same prepared splits, and a changed raw file means preparing again,
        announced on stderr. With `data_dir`, the splits are prepared there once and not checked again."""
        from tasks import prepared

        manual_dir = Path(manual_dir)
        if not manual_dir.is_dir() or not any(manual_dir.iterdir()):
            raise DataError(f"{self.name}: manual directory {manual_dir} is missing or empty.\n"
                            f"{self.download_instructions}")
        if data_dir is not None:  # a folder prepared once: all splits, as TFDS's data_dir always was
            entry, splits = Path(data_dir), None
            entry.mkdir(parents=True, exist_ok=True)
        else:
            entry = prepared.entry_for(self.name, manual_dir, cache_dir)
        listing = entry / f"v{self.version}-splits.json"
        if splits is not None:
            wanted: set[str] | None = set(splits)
        else:
            wanted = set(json.loads(listing.read_text(encoding="utf-8"))) if listing.is_file() else None
        missing = None if wanted is None else {s for s in wanted
                                               if not prepared.split_folder(entry, self.version, s).is_dir()}
        if missing is None or missing:
            found = self._write_splits(manual_dir, entry, missing)
            if wanted is None:
                prepared.write_atomically_file(listing, json.dumps(sorted(found)))
                wanted = found
        have = {s: prepared.split_folder(entry, self.version, s) for s in sorted(wanted)}
        metadata = entry / f"v{self.version}-metadata.json"
        return PreparedData({s: PreparedSplit(folder) for s, folder in have.items() if folder.is_dir()},
                            json.loads(metadata.read_text(encoding="utf-8")) if metadata.is_file() else {})

    def _write_splits(self, manual_dir: Path, entry: Path, only: set[str] | None) -> set[str]:
        """Run the plugin's split generators (only the `only` splits, all when None) and write each split
        that is not there yet; returns the splits the raw files hold."""
        from types import SimpleNamespace

        from tasks import prepared
        from tasks.quiet import quiet_tfds
        from tasks.records import write_split

        quiet_tfds()
        builder = self.builder(manual_dir, entry)
        builder.only_splits = None if only is None else frozenset(only)
        features = builder.info.features
        # What the plugins' `_split_generators` read of TFDS's download manager: the manual directory.
        dl_manager = SimpleNamespace(manual_dir=manual_dir)
        with contextlib.redirect_stdout(sys.stderr):  # whatever a library prints is not our output
            generators = builder._split_generators(dl_manager)
            for split, examples in generators.items():
                target = prepared.split_folder(entry, self.version, str(split))
                if target.is_dir():
                    continue
                print(f"{self.name}: preparing split {split!r} of {manual_dir} (once, into {target})",
                      file=sys.stderr)
                prepared.write_atomically(target, lambda tmp, examples=examples, split=str(split): write_split(
                    tmp, features, examples, task=self.name, split=split))
        if builder.info.metadata:  # what the builder noted while generating (e.g. tables it dropped)
            target = entry / f"v{self.version}-metadata.json"
            known = json.loads(target.read_text(encoding="utf-8")) if target.is_file() else {}
            prepared.write_atomically_file(target, json.dumps({**known, **dict(builder.info.metadata)}))
        return {str(s) for s in generators}

    def split_name(self, role: str) -> str:
        if role not in self.splits:
            raise KeyError(f"task {self.name!r} has no split {role!r}; it has {sorted(self.splits)}")
        return self.splits[role]

    def examples(self, manual_dir: str | Path, role: str, data_dir: str | Path | None = None, *,
                 cache_dir: str | Path | None = None) -> ExampleSource:
        """Random-access Examples of one split role ("train", "minival", "eval", "test"): len() and
        indexing read one record each, and an example's image is decoded only when `.image` is read.

        The role's split expression is resolved against the prepared split sizes (tasks/splits.py), so
        the paper's slices also work on demo-sized data."""
        expression = self.split_name(role)
        data = self.prepare(manual_dir, data_dir, cache_dir=cache_dir, splits=split_names(expression))
        return ExampleSource(self, RecordView(data.splits, resolve_split(expression, data.sizes)))

    def references(self, manual_dir: str | Path, role: str, data_dir: str | Path | None = None, *,
                   cache_dir: str | Path | None = None) -> dict[str, Any]:
        """Example id -> metric reference, read from the records' text fields: no image is decoded (for a
        plugin whose `example` leaves `record["image"]` undecoded, as vqav2 and docvqa do)."""
        return {ex.id: ex.reference for ex in self.examples(manual_dir, role, data_dir, cache_dir=cache_dir)}


@dataclass(frozen=True)
class PreparedData:
    """The prepared splits of one task's raw files (tasks/records.py), with what the plugin's builder put
    in `info.metadata` while generating them."""

    splits: Mapping[str, PreparedSplit]
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}

    @property
    def info(self) -> Any:
        """The parts of TFDS's DatasetInfo plugins and callers read: `metadata`, `splits[name].num_examples`."""
        from types import SimpleNamespace

        return SimpleNamespace(metadata=dict(self.metadata),
                               splits={k: SimpleNamespace(num_examples=n) for k, n in self.sizes.items()})


class ExampleSource(Sequence[Example]):
    """Records viewed through `Task.example`: len() and random access, no tensorflow."""

    def __init__(self, task: Task, source: Sequence[Mapping[str, Any]]):
        self._task, self._source = task, source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Example:  # type: ignore[override]
        return self._task.example(self._source[index])

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        if hasattr(self._source, "__getitems__"):
            return [self._task.example(r) for r in self._source.__getitems__(indices)]
        return [self[i] for i in indices]

    def __iter__(self) -> Iterator[Example]:
        return (self._task.example(record) for record in self._source)


def text(value: Any) -> str:
    """TFDS data sources return Text features as bytes; plugins read them through this."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_json(path: Path) -> Any:
    """json.load with an error naming the file, line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: malformed JSON: {e.msg}") from None


def read_jsonl(path: Path) -> Iterator[dict]:
    """Yield JSON objects, one per non-empty line, with an error naming the file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON line: {e.msg}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield obj


def image_source(path: Path, encoding: str) -> str | io.BytesIO:
    """What the TFDS Image feature gets for one image file: the file itself when it is RGB or grayscale
    (TFDS stores its bytes as they are and expands grayscale to 3 channels on read), otherwise (CMYK,
    palette, alpha) the image converted to RGB and re-encoded, so that every example decodes to H x W x 3.
    """
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in ("RGB", "L"):
            return str(path)
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format=encoding.upper())
    buf.seek(0)
    return buf


def field(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """obj[key] checked for type, with an error naming the file, record and field."""
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {key!r} should be {expected}, got {type(value).__name__}")
    return value


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an H x W x 3 uint8 array as PNG (TFDS stores images as PNG bytes without tensorflow)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
