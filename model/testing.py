"""Tiny configs and their transformers twins, for parity tests and the benchmark.

transformers and torch are imported lazily: only tests and bench/ need them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from model.config import LLMConfig, PaliGemmaConfig, VisionConfig


def tiny_config(*, image_size: int = 16, patch_size: int = 4, **llm_changes) -> PaliGemmaConfig:
    """A seconds-to-run model that still exercises every switch: GQA, head_dim != width/heads,
    query_pre_attn_scalar != head_dim, both soft-caps small enough to bite, a sliding window shorter
    than the sequence, post norms. Override LLM fields by keyword (e.g. num_kv_heads=1)."""
    vision = VisionConfig(width=32, depth=2, mlp_dim=64, num_heads=4, patch_size=patch_size,
                          image_size=image_size)
    llm = LLMConfig(width=64, depth=3, mlp_dim=128, num_heads=4, num_kv_heads=2, head_dim=24,
                    vocab_size=300, query_pre_attn_scalar=20, attn_logits_softcap=5.0,
                    final_logits_softcap=2.0, sliding_window=6)
    llm = dataclasses.replace(llm, **llm_changes)
    return PaliGemmaConfig(name="tiny", family="test", size="tiny", resolution=image_size,
                           vision=vision, llm=llm)


def hf_config(config: PaliGemmaConfig):
    """The transformers PaliGemmaConfig describing the same model (Gemma 2 text config, or Gemma 1
    when post norms are off). The <image> placeholder id is vocab_size, outside the vocabulary."""
    import transformers

    v, t = config.vision, config.llm
    vision = transformers.SiglipVisionConfig(
        hidden_size=v.width, intermediate_size=v.mlp_dim, num_hidden_layers=v.depth,
        num_attention_heads=v.num_heads, patch_size=v.patch_size, image_size=v.image_size,
        layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh", vision_use_head=False)
    common = dict(vocab_size=t.vocab_size, hidden_size=t.width, intermediate_size=t.mlp_dim,
                  num_hidden_layers=t.depth, num_attention_heads=t.num_heads,
                  num_key_value_heads=t.num_kv_heads, head_dim=t.head_dim, rms_norm_eps=t.norm_eps,
                  rope_parameters={"rope_type": "default", "rope_theta": t.rope_base},
                  hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                  pad_token_id=0, eos_token_id=1, bos_token_id=2)
    if t.post_norms:
        text = transformers.Gemma2Config(
            query_pre_attn_scalar=t.query_pre_attn_scalar, attn_logit_softcapping=t.attn_logits_softcap,
            final_logit_softcapping=t.final_logits_softcap, sliding_window=t.sliding_window,
            # Without a window every layer is global (transformers' cache needs the layer types said).
            layer_types=None if t.sliding_window else ["full_attention"] * t.depth, **common)
    else:
        text = transformers.GemmaConfig(**common)
    return transformers.PaliGemmaConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=t.vocab_size,
        vocab_size=t.vocab_size, projection_dim=t.width, hidden_size=t.width)


def random_hf_model(config: PaliGemmaConfig, seed: int = 0):
    """A transformers PaliGemmaForConditionalGeneration with random weights large enough that the
    soft-caps bite, and norm scales drawn away from their init (0 for RMSNorm, 1 for LayerNorm), so
    a missing (1 + scale) or a swapped weight changes the logits."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.PaliGemmaForConditionalGeneration(hf_config(config)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "norm." in name:
                p.uniform_(0.3, 1.0) if name.endswith("weight") else p.normal_(0.0, 0.1)
            elif "embed_tokens" in name:  # Small, so the layers (not the last token) drive the output.
                p.normal_(0.0, 0.05)
            elif p.ndim >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                p.normal_(0.0, 1.0 / fan_in**0.5)
            else:
                p.normal_(0.0, 0.1)
    return model


def random_inputs(config: PaliGemmaConfig, prefix_lens, suffix_lens, seq_len: int, seed: int = 0):
    """A batch in the training layout [BOS, prefix..., sep | suffix..., EOS | pad]: images in [-1, 1],
    tokens, mask_ar (0 prefix, 1 suffix) and mask_input (0 on padding). Token ids avoid 0-2."""
    rng = np.random.default_rng(seed)
    b, res = len(prefix_lens), config.vision.image_size
    images = rng.uniform(-1, 1, (b, res, res, 3)).astype(np.float32)
    tokens = np.zeros((b, seq_len), np.int32)
    mask_ar = np.ones((b, seq_len), np.int32)
    mask_input = np.zeros((b, seq_len), np.int32)
    for i, (p, s) in enumerate(zip(prefix_lens, suffix_lens)):
        if p + s > seq_len or p < 1:
            raise ValueError(f"example {i}: prefix {p} + suffix {s} must fit in {seq_len}, prefix >= 1")
        tokens[i, :p + s] = rng.integers(3, config.llm.vocab_size, p + s)
        tokens[i, 0] = 2
        mask_ar[i, :p] = 0
        mask_input[i, :p + s] = 1
    return images, tokens, mask_ar, mask_input


def hf_inputs(config: PaliGemmaConfig, images, tokens, mask_ar, mask_input):
    """The same batch as transformers takes it: image placeholders first, token_type_ids 0 for the
    image and prefix, 1 for the suffix (and padding), attention_mask 0 on padding."""
    import torch

    b, n = tokens.shape[0], config.num_image_tokens
    placeholder = np.full((b, n), config.llm.vocab_size, np.int64)
    return dict(
        input_ids=torch.from_numpy(np.concatenate([placeholder, tokens], axis=1).astype(np.int64)),
        pixel_values=torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
        attention_mask=torch.from_numpy(np.concatenate([np.ones((b, n)), mask_input], axis=1).astype(np.int64)),
        token_type_ids=torch.from_numpy(
            np.concatenate([np.zeros((b, n)), (np.cumsum(mask_ar, axis=1) > 0) | (mask_input == 0)],
                           axis=1).astype(np.int64)))
