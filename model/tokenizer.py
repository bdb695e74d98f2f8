"""SentencePiece tokenizer with PaliGemma's `<locNNNN>` / `<segNNN>` tokens and big_vision's text layout.

Why a wrapper: the transfer recipes depend on an exact token layout (BOS, prompt, "\\n" separator,
suffix, EOS) and exact masks; this module is the single place that builds them, so the trainer, the
evaluator and the task plugins cannot disagree (docs/paligemma2-facts.md §1.6, §1.7).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import sentencepiece as spm
from google.protobuf.message import DecodeError
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from model.config import NUM_LOC_TOKENS, NUM_SEG_TOKENS

SEPARATOR = "\n"  # between prefix and suffix (docs/paligemma2-facts.md §1.7)


def loc_piece(i: int) -> str:
    """The piece for location bin i (0..1023), 4 digits: `<loc0012>`."""
    if not 0 <= i < NUM_LOC_TOKENS:
        raise ValueError(f"loc index {i} is outside 0..{NUM_LOC_TOKENS - 1}")
    return f"<loc{i:04d}>"


def seg_piece(i: int) -> str:
    """The piece for segmentation codeword i (0..127), 3 digits: `<seg042>`."""
    if not 0 <= i < NUM_SEG_TOKENS:
        raise ValueError(f"seg index {i} is outside 0..{NUM_SEG_TOKENS - 1}")
    return f"<seg{i:03d}>"


# big_vision appends loc then seg pieces to the SentencePiece proto, in this order (facts §1.6).
EXTRA_PIECES: tuple[str, ...] = (tuple(loc_piece(i) for i in range(NUM_LOC_TOKENS))
                                 + tuple(seg_piece(i) for i in range(NUM_SEG_TOKENS)))


def with_loc_seg_pieces(model_proto: bytes, source: str = "<model proto>") -> bytes:
    """The serialized SentencePiece model with the 1152 loc/seg pieces appended after the base pieces.

    A model that already has them (the pre-baked `paligemma_tokenizer.model`) is returned unchanged,
    after checking that they sit contiguously in big_vision's order; anything else raises, naming
    `source` and the first piece out of place.
    """
    proto = sp_pb2.ModelProto()
    try:
        proto.ParseFromString(model_proto)
    except DecodeError as e:
        raise ValueError(f"{source}: not a SentencePiece model ({e})") from e
    pieces = [p.piece for p in proto.pieces]
    if EXTRA_PIECES[0] not in pieces:
        stray = next((p for p in EXTRA_PIECES if p in pieces), None)
        if stray is not None:
            raise ValueError(f"{source}: has {stray} but not {EXTRA_PIECES[0]}; expected all of "
                             f"<loc0000>..<seg127> or none of them")
        for text in EXTRA_PIECES:
            # USER_DEFINED pieces are matched whole in the input, so "<loc0012>" encodes to one id.
            piece = proto.pieces.add(piece=text, score=0.0)
            piece.type = sp_pb2.ModelProto.SentencePiece.USER_DEFINED
        return proto.SerializeToString()
    start = pieces.index(EXTRA_PIECES[0])
    found = pieces[start:start + len(EXTRA_PIECES)]
    for offset, (want, got) in enumerate(zip(EXTRA_PIECES, found + [None] * len(EXTRA_PIECES))):
        if want != got:
            raise ValueError(f"{source}: piece id {start + offset} is {got!r}; expected {want!r} "
                             f"(loc/seg pieces must be contiguous from id {start})")
    return model_proto


class Tokenizer:
    """A SentencePiece model with Gemma's special ids (pad 0, eos 1, bos 2) and loc/seg tokens."""

    def __init__(self, model_file: str | os.PathLike):
        self.model_file = os.fspath(model_file)
        try:
            with open(self.model_file, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise FileNotFoundError(f"tokenizer model {self.model_file}: {e.strerror}") from e
        proto = with_loc_seg_pieces(raw, source=self.model_file)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(proto)
        except RuntimeError as e:
            raise ValueError(f"{self.model_file}: not a SentencePiece model ({e})") from e
        for name in ("pad", "eos", "bos"):
            if getattr(self._sp, f"{name}_id")() < 0:
                raise ValueError(f"{self.model_file}: the model defines no {name} piece; "
                                 f"expected Gemma's layout pad=0, eos=1, bos=2")
        self._loc0 = self._sp.piece_to_id(EXTRA_PIECES[0])
        self._seg0 = self._loc0 + NUM_LOC_TOKENS
        self._sep = self.encode(SEPARATOR)

    # -- ids ---------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def pad_id(self) -> int:
        return self._sp.pad_id()

    @property
    def eos_id(self) -> int:
        return self._sp.eos_id()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    def loc_id(self, i: int) -> int:
        """Id of `<loc{i:04d}>`; the 1024 loc ids follow the base vocabulary (256000.. for Gemma)."""
        loc_piece(i)  # range check
        return self._loc0 + i

    def seg_id(self, i: int) -> int:
        """Id of `<seg{i:03d}>`; the 128 seg ids follow the loc ids."""
        seg_piece(i)
        return self._seg0 + i

    # -- text <-> ids ------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS or EOS."""
        return self._sp.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` up to the first EOS; pad (and BOS) are dropped, loc/seg tokens stay as text."""
        kept = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i == self.pad_id:
                continue
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside this tokenizer's vocabulary "
                                 f"0..{self.vocab_size - 1} ({self.model_file})")
            kept.append(i)
        return self._sp.decode(kept)

    def decode_batch(self, ids: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
        return [self.decode(row) for row in ids]

    # -- big_vision's transfer layout (facts §1.7) -------------------------------------------------
    def encode_train(self, prefix: str, suffix: str, text_len: int) -> dict[str, np.ndarray]:
        """`[BOS] prefix "\\n" suffix [EOS]` as arrays of length text_len + 1.

        The extra position exists because the trainer feeds tokens[:-1] and predicts tokens[1:].
        mask_ar is 0 over the prefix and separator (they attend to each other and to the image
        fully) and 1 over the suffix (causal); mask_loss selects the suffix and its EOS. Padding:
        tokens pad_id, mask_ar 1, mask_loss 0, mask_input 0. Too-long text is cut at the end.
        """
        _check_len(text_len)
        head = [self.bos_id, *self.encode(prefix), *self._sep]
        tail = [*self.encode(suffix), self.eos_id]
        marks = [0] * len(head) + [1] * len(tail)
        return _pad({"tokens": head + tail, "mask_ar": marks, "mask_loss": marks,
                     "mask_input": [1] * len(marks)},
                    text_len + 1, {"tokens": self.pad_id, "mask_ar": 1, "mask_loss": 0,
                                   "mask_input": 0})

    def encode_eval(self, prefix: str, text_len: int, suffix: str = "") -> dict[str, np.ndarray]:
        """`[BOS] prefix "\\n"` (plus an optional answer start `suffix`, no EOS) padded to text_len.

        mask_ar is 0 over the prompt and 1 over `suffix`, from which decoding continues (facts §1.7);
        padding: tokens pad_id, mask_ar 1, mask_input 0.
        """
        _check_len(text_len)
        head = [self.bos_id, *self.encode(prefix), *self._sep]
        tail = self.encode(suffix) if suffix else []
        return _pad({"tokens": head + tail, "mask_ar": [0] * len(head) + [1] * len(tail),
                     "mask_input": [1] * (len(head) + len(tail))},
                    text_len, {"tokens": self.pad_id, "mask_ar": 1, "mask_input": 0})

    def encode_train_batch(self, prefixes: Sequence[str], suffixes: Sequence[str],
                           text_len: int) -> dict[str, np.ndarray]:
        """encode_train over parallel lists, stacked to (batch, text_len + 1) int32 arrays."""
        if len(prefixes) != len(suffixes):
            raise ValueError(f"{len(prefixes)} prefixes but {len(suffixes)} suffixes; expected one each")
        return _stack([self.encode_train(p, s, text_len) for p, s in zip(prefixes, suffixes)])

    def encode_eval_batch(self, prefixes: Sequence[str], text_len: int) -> dict[str, np.ndarray]:
        """encode_eval over a list, stacked to (batch, text_len) int32 arrays."""
        return _stack([self.encode_eval(p, text_len) for p in prefixes])


def _check_len(text_len: int) -> None:
    if not isinstance(text_len, (int, np.integer)) or text_len < 1:
        raise ValueError(f"text_len must be a positive int, got {text_len!r}")


def _pad(fields: dict[str, list[int]], length: int, pad: dict[str, int]) -> dict[str, np.ndarray]:
    return {k: np.array((v + [pad[k]] * length)[:length], dtype=np.int32) for k, v in fields.items()}


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not rows:
        raise ValueError("cannot encode an empty batch")
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


# -- location tokens (facts §1.6) ------------------------------------------------------------------
def loc_tokens(values: Iterable[float]) -> str:
    """Normalised coordinates in [0, 1] -> `<locNNNN>` pieces, bin = round(v * 1023) clipped to 0..1023.

    np.round rounds halves to even, as big_vision's tf.round does. Box order is the caller's choice
    (RefCOCO uses y1 x1 y2 x2).
    """
    arr = np.asarray(list(values), dtype=np.float64)
    if np.isnan(arr).any():
        raise ValueError(f"loc_tokens got NaN in {arr.tolist()}; expected numbers in [0, 1]")
    bins = np.clip(np.round(arr * (NUM_LOC_TOKENS - 1)), 0, NUM_LOC_TOKENS - 1).astype(int)
    return "".join(loc_piece(int(b)) for b in bins)


def loc_to_unit(i: int) -> float:
    """The normalised coordinate of loc bin i (the inverse of loc_tokens' binning)."""
    loc_piece(i)
    return i / (NUM_LOC_TOKENS - 1)


# Anything the model may have meant as a loc token: "<loc" then digits, with or without ">".
_LOC_LIKE = re.compile(r"<loc(\d*)(>?)")
_LOC_RUN = re.compile(r"<loc\d*>?(?:\s*<loc\d*>?)*")


def _loc_value(match: re.Match) -> int | None:
    digits, close = match.group(1), match.group(2)
    if len(digits) != 4 or not close or int(digits) >= NUM_LOC_TOKENS:
        return None
    return int(digits)


def parse_loc_tokens(text: str) -> list[int]:
    """The loc bins of every `<locNNNN>` in `text`, in order; a malformed one raises ValueError."""
    values = []
    for m in _LOC_LIKE.finditer(text):
        v = _loc_value(m)
        if v is None:
            raise ValueError(f"malformed loc token {m.group(0)!r} at character {m.start()}; "
                             f"expected <loc0000>..<loc{NUM_LOC_TOKENS - 1:04d}>")
        values.append(v)
    return values


@dataclass(frozen=True)
class LocGroup:
    """One run of `group_size` loc tokens and where it sits in the text (label text follows at `end`)."""

    values: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class LocParse:
    groups: list[LocGroup]
    errors: list[str]


def parse_loc_groups(text: str, group_size: int = 4) -> LocParse:
    """Runs of adjacent loc tokens split into groups of `group_size`, never raising.

    Model output is untrusted: a run whose length is not a multiple of group_size, or that holds a
    malformed token (`<loc12>`, `<loc2000>`, a missing `>`), is reported in `errors` and skipped, so
    a task's parser can count it as a miss (docs/design.md: malformed output is a miss, not a crash).
    """
    groups, errors = [], []
    for run in _LOC_RUN.finditer(text):
        tokens = list(_LOC_LIKE.finditer(run.group(0)))
        values = [_loc_value(m) for m in tokens]
        bad = [m.group(0) for m, v in zip(tokens, values) if v is None]
        if bad:
            errors.append(f"characters {run.start()}-{run.end()}: malformed loc token(s) {bad}")
            continue
        if len(values) % group_size:
            errors.append(f"characters {run.start()}-{run.end()}: {len(values)} loc tokens; "
                          f"expected a multiple of {group_size}")
            continue
        for g in range(0, len(values), group_size):
            start = run.start() + tokens[g].start()
            end = run.start() + tokens[g + group_size - 1].end()
            groups.append(LocGroup(tuple(values[g:g + group_size]), start, end))
    return LocParse(groups, errors)
