"""Tokenizer: Gemma's id layout, loc/seg tokens, big_vision's text layout and masks, loc parsing.

A tiny SentencePiece model is trained here (a second or so); the real Gemma file cannot be
downloaded in tests. Expected layouts are written out by hand from docs/paligemma2-facts.md §1.7.
"""

import random

import numpy as np
import pytest
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from model.tokenizer import EXTRA_PIECES, Tokenizer, loc_to_unit, loc_tokens, parse_loc_groups, parse_loc_tokens
from model.train_tokenizer import main as train_main
from model.train_tokenizer import train_tokenizer

BASE = 300  # base pieces of the test model: 4 specials + 256 bytes + 40 learned
WORDS = ("the cat sat on a mat with red blue green boxes and dogs running over lazy fox "
         "answer caption detect en what is in this image").split()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    rng = random.Random(0)
    corpus = tmp_path_factory.mktemp("sp") / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(300)))
    out = corpus.parent / "tiny.model"
    train_main(["--corpus", str(corpus), "--vocab-size", str(BASE), "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def tok(model_path):
    return Tokenizer(model_path)


def _proto(path):
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


def test_special_ids_match_gemma(tok):
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
    assert tok.vocab_size == BASE + 1024 + 128


def test_loc_seg_ids_are_contiguous_after_base_vocab(tok, model_path):
    pieces = [p.piece for p in _proto(model_path).pieces]
    assert pieces[BASE:] == list(EXTRA_PIECES)
    assert [tok.loc_id(i) for i in range(1024)] == list(range(BASE, BASE + 1024))
    assert [tok.seg_id(i) for i in range(128)] == list(range(BASE + 1024, BASE + 1152))
    assert tok.encode("<loc0012>") == [tok.loc_id(12)]
    assert tok.encode("<seg127><loc1023>") == [tok.seg_id(127), tok.loc_id(1023)]
    with pytest.raises(ValueError, match="outside 0..1023"):
        tok.loc_id(1024)


def test_file_without_loc_seg_gets_them_appended(tok, model_path, tmp_path):
    proto = _proto(model_path)
    del proto.pieces[BASE:]
    base_only = tmp_path / "base.model"
    base_only.write_bytes(proto.SerializeToString())
    plain = Tokenizer(base_only)
    assert plain.vocab_size == tok.vocab_size
    assert plain.loc_id(0) == BASE and plain.seg_id(0) == BASE + 1024
    assert plain.encode("<loc0012> red cat") == tok.encode("<loc0012> red cat")


def test_bad_model_files_name_the_file(model_path, tmp_path):
    proto = _proto(model_path)
    proto.pieces[BASE + 5].piece = "<loc9999>"
    shuffled = tmp_path / "shuffled.model"
    shuffled.write_bytes(proto.SerializeToString())
    with pytest.raises(ValueError, match=r"shuffled.model: piece id 305 is '<loc9999>'; expected '<loc0005>'"):
        Tokenizer(shuffled)
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"\xff\x00not a model")
    with pytest.raises(ValueError, match="junk.model: not a SentencePiece model"):
        Tokenizer(junk)
    with pytest.raises(FileNotFoundError, match="missing.model"):
        Tokenizer(tmp_path / "missing.model")


@pytest.mark.parametrize("text", ["the cat sat", "  two  spaces\tand tab\n", "héllo wörld 2024 😀",
                                  "<loc0001><loc1023><seg000> red fox", ""])
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_byte_fallback_and_separator_are_single_pieces(tok):
    assert tok.encode("\n") == [tok._sp.piece_to_id("<0x0A>")]
    assert 3 not in tok.encode("ünïcödé ∑ 😀")  # never unk


def test_encode_train_layout_by_hand(tok):
    nl = tok.encode("\n")[0]
    l1, l2, l3 = tok.loc_id(1), tok.loc_id(2), tok.loc_id(3)
    out = tok.encode_train("<loc0001><loc0002>", "<loc0003>", text_len=7)
    #                   BOS  prefix   sep | suffix EOS | pad
    assert out["tokens"].tolist() == [2, l1, l2, nl, l3, 1, 0, 0]
    assert out["mask_ar"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert out["mask_loss"].tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
    assert out["mask_input"].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert all(v.dtype == np.int32 for v in out.values())


def test_encode_eval_layout_by_hand(tok):
    nl = tok.encode("\n")[0]
    l1, l2 = tok.loc_id(1), tok.loc_id(2)
    out = tok.encode_eval("<loc0001><loc0002>", text_len=6)
    assert out["tokens"].tolist() == [2, l1, l2, nl, 0, 0]
    assert out["mask_ar"].tolist() == [0, 0, 0, 0, 1, 1]
    assert out["mask_input"].tolist() == [1, 1, 1, 1, 0, 0]
    started = tok.encode_eval("<loc0001>", text_len=6, suffix="<loc0002>")
    assert started["tokens"].tolist() == [2, l1, nl, l2, 0, 0]
    assert started["mask_ar"].tolist() == [0, 0, 0, 1, 1, 1]


def test_real_text_masks_cover_prefix_and_suffix(tok):
    prefix, suffix = "caption en", "a red cat on the mat"
    p, s = tok.encode(prefix), tok.encode(suffix)
    out = tok.encode_train(prefix, suffix, text_len=40)
    n = len(p) + 2  # BOS + prefix + separator
    assert out["tokens"][:n + len(s) + 1].tolist() == [2, *p, *tok.encode("\n"), *s, 1]
    assert out["mask_loss"].sum() == len(s) + 1
    assert tok.decode(out["tokens"][n:]) == suffix


def test_truncation_cuts_the_end(tok):
    l1, l2, l3 = tok.loc_id(1), tok.loc_id(2), tok.loc_id(3)
    out = tok.encode_train("<loc0001>", "<loc0002><loc0003><loc0004>", text_len=4)
    nl = tok.encode("\n")[0]
    assert out["tokens"].tolist() == [2, l1, nl, l2, l3]  # EOS and <loc0004> are cut
    assert out["mask_loss"].tolist() == [0, 0, 0, 1, 1]
    assert tok.encode_eval("the cat sat on the mat", text_len=3)["tokens"].shape == (3,)
    with pytest.raises(ValueError, match="text_len must be a positive int"):
        tok.encode_train("a", "b", text_len=0)


def test_decode_stops_at_eos_and_skips_pad(tok):
    cat = tok.encode("cat")
    assert tok.decode([2, *cat, 0, 0, *tok.encode(" sat"), 1, *tok.encode(" junk")]) == "cat sat"
    assert tok.decode(np.array([tok.loc_id(5), tok.seg_id(7), 1, tok.loc_id(6)])) == "<loc0005><seg007>"
    with pytest.raises(ValueError, match="token id 99999 is outside"):
        tok.decode([99999])


def test_batches_stack_single_examples(tok):
    prefixes, suffixes = ["caption en", "answer en what is this"], ["a cat", "dog"]
    batch = tok.encode_train_batch(prefixes, suffixes, text_len=40)
    assert batch["tokens"].shape == (2, 41)
    single = tok.encode_train(prefixes[1], suffixes[1], 40)
    for key in ("tokens", "mask_ar", "mask_loss", "mask_input"):
        np.testing.assert_array_equal(batch[key][1], single[key])
    evals = tok.encode_eval_batch(prefixes, text_len=40)
    assert evals["tokens"].shape == (2, 40)
    assert tok.decode_batch(batch["tokens"]) == ["caption en\na cat", "answer en what is this\ndog"]
    with pytest.raises(ValueError, match="2 prefixes but 1 suffixes"):
        tok.encode_train_batch(prefixes, suffixes[:1], 16)


def test_loc_tokens_binning():
    # 0.5 * 1023 = 511.5 rounds half to even -> 512; 0.25 * 1023 = 255.75 -> 256; out of range clips.
    assert loc_tokens([0.0, 0.5, 0.25, 1.0, 1.2, -0.1]) == (
        "<loc0000><loc0512><loc0256><loc1023><loc1023><loc0000>")
    assert loc_to_unit(1023) == 1.0
    with pytest.raises(ValueError, match="NaN"):
        loc_tokens([float("nan")])


def test_parse_loc_tokens_strict():
    assert parse_loc_tokens("<loc0001><loc0200> cat <loc1023>") == [1, 200, 1023]
    with pytest.raises(ValueError, match=r"malformed loc token '<loc12>' at character 9"):
        parse_loc_tokens("<loc0001><loc12>")
    with pytest.raises(ValueError, match="<loc1024>"):
        parse_loc_tokens("<loc1024>")


def test_parse_loc_groups_reports_malformed_runs():
    text = ("<loc0010><loc0020><loc0030><loc0040> cat ; <loc0001><loc0002><loc0003> dog ; "
            "<loc0001><loc2000><loc0003><loc0004> fox ; <loc0005><loc0006><loc0007><loc0008>"
            "<loc0009><loc0010><loc0011><loc0012> bird ; <loc0100><loc01")
    parsed = parse_loc_groups(text)
    assert [g.values for g in parsed.groups] == [(10, 20, 30, 40), (5, 6, 7, 8), (9, 10, 11, 12)]
    assert text[parsed.groups[0].end:].startswith(" cat")
    assert text[parsed.groups[0].start:parsed.groups[0].end] == "<loc0010><loc0020><loc0030><loc0040>"
    assert len(parsed.errors) == 3
    assert "3 loc tokens; expected a multiple of 4" in parsed.errors[0]
    assert "'<loc2000>'" in parsed.errors[1]
    assert "'<loc01'" in parsed.errors[2]


def test_train_tokenizer_rejects_too_small_corpus(tmp_path):
    with pytest.raises(ValueError, match="could not train a 5000-piece bpe model on 2 lines"):
        train_tokenizer(["a b c", "d e f"], 5000, tmp_path / "x.model")
    with pytest.raises(ValueError, match="model_type 'wordpiece'"):
        train_tokenizer(["a"], 300, tmp_path / "x.model", model_type="wordpiece")


def test_unigram_model_has_the_same_layout(tmp_path):
    rng = random.Random(1)
    lines = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(300)]
    tok = Tokenizer(train_tokenizer(lines, BASE, tmp_path / "uni.model", model_type="unigram"))
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.loc_id(0)) == (0, 1, 2, BASE)
    assert tok.decode(tok.encode("a red fox\n<seg001>")) == "a red fox\n<seg001>"
