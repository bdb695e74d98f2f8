"""Train a small SentencePiece model in Gemma's layout, for model families that cannot use Gemma's.

The nano family (model/config.py, NANO_SP_VOCAB = 2944 base pieces -> 4096 with loc/seg) needs a
vocabulary small enough for CPU models. The trained file mirrors the Gemma tokenizer's conventions so
that everything downstream (tokenizer.Tokenizer, masks, decoding) treats both alike: ids pad 0,
eos 1, bos 2, unk 3 (docs/paligemma2-facts.md §0.8), BPE as Gemma, byte fallback so any text encodes, no
whitespace normalisation, digits split, and the 1024 loc + 128 seg pieces appended after the base
pieces (§1.6).

    python -m model.train_tokenizer --corpus corpus.txt --vocab-size 2944 --out nano.model
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from model.tokenizer import EXTRA_PIECES, Tokenizer, with_loc_seg_pieces

MODEL_TYPES = ("bpe", "unigram")


def train_tokenizer(lines: Iterable[str], vocab_size: int, out_path: str | os.PathLike,
                    model_type: str = "bpe") -> Path:
    """Train on `lines` (one sentence each) and write the model with loc/seg pieces to `out_path`.

    `vocab_size` counts the base pieces only (4 specials + 256 byte pieces + learned ones); the file
    written holds vocab_size + 1152 pieces. A corpus too small for the requested size raises
    ValueError with SentencePiece's suggested maximum.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r}; expected one of {MODEL_TYPES}")
    sentences = [line.rstrip("\r\n") for line in lines]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError("the training corpus has no non-empty lines")
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=buffer, vocab_size=vocab_size,
            model_type=model_type, pad_id=0, eos_id=1, bos_id=2, unk_id=3, byte_fallback=True,
            normalization_rule_name="identity", add_dummy_prefix=False,
            remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
            character_coverage=1.0, num_threads=1, minloglevel=2)
    except RuntimeError as e:
        raise ValueError(f"SentencePiece could not train a {vocab_size}-piece {model_type} model on "
                         f"{len(sentences)} lines: {e}") from e
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(with_loc_seg_pieces(buffer.getvalue(), source=str(out)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="text file, one sentence per line")
    parser.add_argument("--vocab-size", type=int, required=True,
                        help="base pieces, before the 1152 loc/seg pieces are appended")
    parser.add_argument("--out", required=True, help="where to write the .model file")
    parser.add_argument("--model-type", choices=MODEL_TYPES, default="bpe")
    args = parser.parse_args(argv)
    with open(args.corpus, encoding="utf-8") as f:
        out = train_tokenizer(f, args.vocab_size, args.out, args.model_type)
    tok = Tokenizer(out)
    print(f"wrote {out}: {tok.vocab_size - len(EXTRA_PIECES)} base pieces + {len(EXTRA_PIECES)} "
          f"loc/seg = {tok.vocab_size}")


if __name__ == "__main__":
    main()
