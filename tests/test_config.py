"""The family table: image-token counts and the errors a grid author sees for a bad size/resolution."""

import pytest

from model.config import FAMILIES, PALIGEMMA_VOCAB, config_for, get_config


@pytest.mark.parametrize("res,tokens", [(224, 256), (448, 1024), (896, 4096)])
def test_paligemma2_image_tokens(res, tokens):
    for size in ("3b", "10b", "28b"):
        assert config_for(size, res).num_image_tokens == tokens


def test_nano_image_tokens_grow_4x_per_resolution():
    counts = [config_for("nano-s", r).num_image_tokens for r in FAMILIES["nano"]["resolutions"]]
    assert [b / a for a, b in zip(counts, counts[1:])] == [4.0, 4.0]


def test_vocab_and_query_scaling():
    assert PALIGEMMA_VOCAB == 257152
    assert get_config("28b-224").llm.query_pre_attn_scalar == 144
    assert get_config("3b-224").llm.query_pre_attn_scalar == 256


def test_bad_size_and_resolution_name_what_was_expected():
    with pytest.raises(KeyError, match="unknown model size '4b'"):
        config_for("4b", 224)
    with pytest.raises(KeyError, match=r"expected one of \[224, 448, 896\]"):
        config_for("3b", 300)
