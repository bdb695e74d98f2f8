"""Logits parity with transformers' PaliGemmaForConditionalGeneration, through our HF loader.

Random tiny transformers models (see model/testing.py: norm scales away from their init, soft-caps
small enough to bite) are saved with save_pretrained and loaded by model.checkpoint.load; logits must
agree to 1e-4 over image + prefix + suffix on a batch with different lengths and right padding.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from model.checkpoint import flatten, load  # noqa: E402
from model.paligemma import PaliGemma  # noqa: E402
from model.testing import hf_inputs, random_hf_model, random_inputs, tiny_config  # noqa: E402

pytestmark = pytest.mark.parity

CASES = {
    # GQA, head_dim 24 != 64/4, query_pre_attn_scalar 20, both soft-caps, window 6 < sequence.
    "gqa-sliding": dict(),
    "mqa-30px-patch6": dict(num_kv_heads=1, image_size=30, patch_size=6),
    "mha-global-14px-patch7": dict(num_kv_heads=4, sliding_window=None, image_size=14, patch_size=7),
    "window-2-20px-patch5": dict(sliding_window=2, image_size=20, patch_size=5),
    # Gemma 1 text model (PaliGemma 1): no post norms, no soft-caps, head_dim**-0.5 scaling.
    "gemma1": dict(post_norms=False, attn_logits_softcap=None, final_logits_softcap=None,
                   sliding_window=None, query_pre_attn_scalar=24),
}


def hf_logits(model, config, inputs):
    with torch.no_grad():
        out = model(**hf_inputs(config, *inputs), use_cache=False).logits
    return out[:, config.num_image_tokens:].numpy()


@pytest.fixture(scope="module", params=list(CASES))
def twins(request, tmp_path_factory):
    config = tiny_config(**CASES[request.param])
    model = random_hf_model(config, seed=len(request.param))
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return config, model, path


def test_config_json_round_trips(twins):
    config, _, path = twins
    loaded, _ = load(str(path))
    assert loaded.vision == config.vision and loaded.llm == config.llm


def test_logits_match_transformers(twins):
    config, model, path = twins
    loaded, params = load(str(path))
    inputs = random_inputs(config, prefix_lens=[4, 2, 6], suffix_lens=[5, 1, 7], seq_len=14, seed=1)
    ours = np.asarray(PaliGemma(loaded).apply({"params": params}, *inputs))
    ref = hf_logits(model, config, inputs)
    valid = inputs[3].astype(bool)
    assert np.abs(ours - ref)[valid].max() <= 1e-4


def test_soft_caps_and_window_are_visible_at_this_scale(tmp_path):
    """The parity above would catch a missing soft-cap or window: each changes the logits a lot."""
    config = tiny_config()
    random_hf_model(config).save_pretrained(tmp_path)
    _, params = load(str(tmp_path))
    inputs = random_inputs(config, [4, 6], [8, 5], 14, seed=2)
    base = np.asarray(PaliGemma(config).apply({"params": params}, *inputs))
    for change in (dict(attn_logits_softcap=None), dict(final_logits_softcap=None), dict(sliding_window=None)):
        other = PaliGemma(config.with_llm(**change)).apply({"params": params}, *inputs)
        assert np.abs(np.asarray(other) - base)[inputs[3].astype(bool)].max() > 1e-2, change


def test_module_tree_key_layout_loads_too(tmp_path):
    """transformers' module tree names tensors `model.language_model.*` / `model.vision_tower.*`
    (save_pretrained writes `language_model.model.*`); both must load to the same params."""
    from safetensors.torch import save_file

    config = tiny_config()
    model = random_hf_model(config, seed=3)
    model.save_pretrained(tmp_path / "saved")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "config.json").write_text((tmp_path / "saved" / "config.json").read_text())
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert any(k.startswith("model.language_model.") for k in state)
    save_file(state, str(tmp_path / "tree" / "model.safetensors"))
    a = flatten(load(str(tmp_path / "saved"))[1])
    b = flatten(load(str(tmp_path / "tree"))[1])
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
