"""The PaliGemma 2 model family as data: one frozen config per (size, resolution).

Every architectural number lives here; the modules read them from the config and hard-code nothing.
Sources: docs/paligemma2-facts.md §1.2 (SigLIP So400m/14), §1.3 (Gemma 2 variants),
§1.6 (vocabulary = 256000 + 1024 loc + 128 seg).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

GEMMA_VOCAB = 256_000
NUM_LOC_TOKENS = 1024
NUM_SEG_TOKENS = 128
PALIGEMMA_VOCAB = GEMMA_VOCAB + NUM_LOC_TOKENS + NUM_SEG_TOKENS  # 257152

# The nano family's own SentencePiece model has 2944 pieces; loc and seg tokens follow them.
NANO_SP_VOCAB = 2944
NANO_VOCAB = NANO_SP_VOCAB + NUM_LOC_TOKENS + NUM_SEG_TOKENS  # 4096


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP ViT: patch conv, learned position embedding, pre-LN encoder blocks, final LayerNorm."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int
    image_size: int
    # "dense", "fused" or None (per backend), as LLMConfig.attention_impl; SigLIP has no soft-cap.
    attention_impl: str | None = None

    def __post_init__(self) -> None:
        from model.attention import check_impl

        check_impl(self.attention_impl, None, "VisionConfig.attention_impl")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class LLMConfig:
    """Gemma 2 decoder. Soft-caps and the sliding window are switchable (None turns them off)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    # Queries are multiplied by query_pre_attn_scalar**-0.5: head_dim for 2B/9B, width/heads = 144 for 27B.
    query_pre_attn_scalar: float
    attn_logits_softcap: float | None = 50.0
    final_logits_softcap: float | None = 30.0
    # None: global attention in every layer, as big_vision implements Gemma 2. An int: the layers that
    # transformers' Gemma 2 marks as sliding (even indices) see only that many previous positions.
    sliding_window: int | None = None
    post_norms: bool = True
    norm_eps: float = 1e-6
    rope_base: float = 10_000.0
    # "dense" (materialised logits, any soft-cap), "fused" (jax.nn.dot_product_attention: cuDNN on a GPU;
    # needs attn_logits_softcap None) or None (per backend: fused on GPU when the cap is off). See
    # model/attention.py and docs/efficiency.md.
    attention_impl: str | None = None

    def __post_init__(self) -> None:
        from model.attention import check_impl

        check_impl(self.attention_impl, self.attn_logits_softcap, "LLMConfig.attention_impl")


@dataclass(frozen=True)
class PaliGemmaConfig:
    """A whole model: image encoder + linear projector + language model."""

    name: str
    family: str
    size: str
    resolution: int
    vision: VisionConfig
    llm: LLMConfig

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches

    def replace(self, **changes) -> PaliGemmaConfig:
        return dataclasses.replace(self, **changes)

    def with_llm(self, **changes) -> PaliGemmaConfig:
        return dataclasses.replace(self, llm=dataclasses.replace(self.llm, **changes))

    def with_vision(self, **changes) -> PaliGemmaConfig:
        return dataclasses.replace(self, vision=dataclasses.replace(self.vision, **changes))


SO400M = dict(width=1152, depth=27, mlp_dim=4304, num_heads=16, patch_size=14)

GEMMA2 = {
    "3b": LLMConfig(width=2304, depth=26, mlp_dim=9216, num_heads=8, num_kv_heads=4, head_dim=256,
                    vocab_size=PALIGEMMA_VOCAB, query_pre_attn_scalar=256),
    "10b": LLMConfig(width=3584, depth=42, mlp_dim=14336, num_heads=16, num_kv_heads=8, head_dim=256,
                     vocab_size=PALIGEMMA_VOCAB, query_pre_attn_scalar=256),
    "28b": LLMConfig(width=4608, depth=46, mlp_dim=36864, num_heads=32, num_kv_heads=16, head_dim=128,
                     vocab_size=PALIGEMMA_VOCAB, query_pre_attn_scalar=4608 / 32),
}

# The nano family: CPU-sized models of the same architecture. As in PaliGemma 2, the image
# encoder is shared by all sizes and only the language model grows; image tokens grow 4x per
# resolution step (16 / 64 / 256 at 32 / 64 / 128 px with patch 8), as 256 / 1024 / 4096 do.
NANO_VIT = dict(width=128, depth=4, mlp_dim=512, num_heads=4, patch_size=8)
NANO_LLM = {
    "nano-s": LLMConfig(width=128, depth=3, mlp_dim=512, num_heads=4, num_kv_heads=2, head_dim=32,
                        vocab_size=NANO_VOCAB, query_pre_attn_scalar=32),
    "nano-m": LLMConfig(width=256, depth=6, mlp_dim=1024, num_heads=4, num_kv_heads=2, head_dim=64,
                        vocab_size=NANO_VOCAB, query_pre_attn_scalar=64),
    "nano-l": LLMConfig(width=512, depth=8, mlp_dim=2048, num_heads=8, num_kv_heads=4, head_dim=64,
                        vocab_size=NANO_VOCAB, query_pre_attn_scalar=64),
}

FAMILIES: dict[str, dict] = {
    "paligemma2": dict(sizes=("3b", "10b", "28b"), resolutions=(224, 448, 896)),
    "nano": dict(sizes=("nano-s", "nano-m", "nano-l"), resolutions=(32, 64, 128)),
}


def _build(family: str, size: str, resolution: int) -> PaliGemmaConfig:
    if family == "paligemma2":
        vision, llm = SO400M, GEMMA2[size]
    else:
        vision, llm = NANO_VIT, NANO_LLM[size]
    return PaliGemmaConfig(
        name=f"{size}-{resolution}", family=family, size=size, resolution=resolution,
        vision=VisionConfig(image_size=resolution, **vision), llm=llm)


CONFIGS: dict[str, PaliGemmaConfig] = {
    f"{size}-{res}": _build(family, size, res)
    for family, spec in FAMILIES.items() for size in spec["sizes"] for res in spec["resolutions"]
}


def family_of(size: str) -> str:
    """The family a size belongs to ('3b' -> 'paligemma2', 'nano-s' -> 'nano')."""
    for family, spec in FAMILIES.items():
        if size in spec["sizes"]:
            return family
    known = ", ".join(s for spec in FAMILIES.values() for s in spec["sizes"])
    raise KeyError(f"unknown model size {size!r}; known sizes: {known}")


def get_config(name: str) -> PaliGemmaConfig:
    """The config called `name` ('3b-224', 'nano-m-64', ...)."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown model config {name!r}; known: {', '.join(CONFIGS)}") from None


def config_for(size: str, resolution: int) -> PaliGemmaConfig:
    """The family member at (size, resolution), with an error that lists what the family has."""
    family = family_of(size)
    resolutions = FAMILIES[family]["resolutions"]
    if resolution not in resolutions:
        raise KeyError(f"resolution {resolution} is not in the {family} family of size {size!r}; "
                       f"expected one of {list(resolutions)}")
    return CONFIGS[f"{size}-{resolution}"]
