"""What the benchmarks share: the small model they compare on the CPU, a timer, and transformers' train
step (PaliGemmaForConditionalGeneration with Adam, the same loss as ours)."""

from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np

from model.config import LLMConfig, PaliGemmaConfig, VisionConfig
from model.testing import hf_inputs

# The CPU comparisons' model: 224 px with patch 14 (256 image tokens, as PaliGemma's smallest resolution),
# LLM width 512 with 4 layers, Gemma 2 features on (GQA, soft-caps); the largest a 2-core CPU runs comfortably.
CONFIG = PaliGemmaConfig(
    name="bench", family="bench", size="bench", resolution=224,
    vision=VisionConfig(width=384, depth=4, mlp_dim=1536, num_heads=6, patch_size=14, image_size=224),
    llm=LLMConfig(width=512, depth=4, mlp_dim=2048, num_heads=8, num_kv_heads=4, head_dim=64, vocab_size=4096,
                  query_pre_attn_scalar=64, sliding_window=None))


def timed(fn, repeats: int) -> float:
    """Seconds per call, best of `repeats` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def hf_train_step(config, model, batch, repeats, dtype, device: str = "cpu"):
    """float32, or bfloat16 autocast (float32 weights, like ours) for dtype=bfloat16; on `device`
    ('cpu' or 'cuda', where the model already is)."""
    import torch

    images, tokens, mask_ar, mask_input = batch
    inputs = {k: v.to(device) for k, v in hf_inputs(config, *batch).items()}
    n = config.num_image_tokens
    target = torch.from_numpy(tokens[:, 1:].astype(np.int64)).to(device)
    mask = torch.from_numpy((mask_ar * mask_input)[:, 1:].astype(np.float32)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def run():
        opt.zero_grad()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == jnp.bfloat16):
            logits = model(**inputs, use_cache=False).logits[:, n:-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        loss = ((nll * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    seconds = timed(run, repeats)
    model.eval()
    return seconds
