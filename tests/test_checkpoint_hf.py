"""The HF loader refuses files that do not match their config.json, naming the tensor and shapes."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors.numpy import load_file, save_file  # noqa: E402

from model.checkpoint import CheckpointError, load  # noqa: E402
from model.config import get_config  # noqa: E402
from model.testing import random_hf_model, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    random_hf_model(tiny_config()).save_pretrained(path)
    return path


def _rewrite(src, dst, edit):
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    tensors = load_file(str(src / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return str(dst)


def test_missing_tensor(saved, tmp_path):
    name = "language_model.model.layers.1.self_attn.k_proj.weight"
    path = _rewrite(saved, tmp_path / "d", lambda t: t.pop(name))
    with pytest.raises(CheckpointError, match=r"missing tensor 'language_model.layers.1.self_attn.k_proj.weight' "
                                              r"\(expected shape \(48, 64\);"):
        load(path)


def test_extra_tensor(saved, tmp_path):
    extra = {"language_model.model.extra.bias": np.zeros(3, np.float32)}
    path = _rewrite(saved, tmp_path / "d", lambda t: t.update(extra))
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'language_model.model.extra.bias' with shape \(3,\)"):
        load(path)


def test_misshaped_tensor(saved, tmp_path):
    name = "vision_tower.encoder.layers.0.mlp.fc1.weight"
    path = _rewrite(saved, tmp_path / "d", lambda t: t.update({name: np.zeros((64, 31), np.float32)}))
    with pytest.raises(CheckpointError, match=r"'vision_tower.encoder.layers.0.mlp.fc1.weight' has shape \(64, 31\), "
                                              r"expected \(64, 32\)"):
        load(path)


def test_unsupported_config_is_named(saved, tmp_path):
    config = json.loads((saved / "config.json").read_text())
    config["text_config"]["hidden_activation"] = "relu"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config.json: hidden_activation='relu' is not supported"):
        load(str(tmp_path / "d"))


def test_bfloat16_files_keep_their_dtype_unless_asked(saved, tmp_path):
    import ml_dtypes

    path = _rewrite(saved, tmp_path / "d",
                    lambda t: t.update({k: v.astype(ml_dtypes.bfloat16) for k, v in t.items()}))
    _, params = load(path)
    assert params["llm"]["layers"]["mlp"]["linear"].dtype == ml_dtypes.bfloat16
    _, params = load(path, dtype=np.float32)
    assert params["img"]["head"]["kernel"].dtype == np.float32


def test_real_3b_config_json_maps_to_the_family_table():
    """A config.json shaped like google/paligemma2-3b-pt-224's (global attention, as big_vision)."""
    from model.checkpoint import config_from_hf

    hf = dict(
        vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                           patch_size=14, image_size=224, model_type="siglip_vision_model"),
        text_config=dict(model_type="gemma2", hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                         num_attention_heads=8, num_key_value_heads=4, head_dim=256, vocab_size=257152,
                         query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                         layer_types=["full_attention"] * 26, sliding_window=4096,
                         hidden_activation="gelu_pytorch_tanh"))
    assert config_from_hf(hf, "x") == get_config("3b-224")
    hf["text_config"].pop("layer_types")  # transformers' default: alternate sliding layers
    assert config_from_hf(hf, "x") == get_config("3b-224").with_llm(sliding_window=4096).replace(
        name="hf:x", family="hf", size="x")
