"""Parameters, training FLOPs and memory per example, for scheduling a size x resolution grid.

The scheduler orders and packs cells by cost, and a user choosing a grid wants to know what a cell
costs before running it. Counts are analytic, from the config alone, so they are instant for 28B@896
and need no device; tests check them against jax.eval_shape of the real model's init.

Training FLOPs per example (a multiply-add is 2 FLOPs; training = 3 x forward, since the backward
pass costs twice the forward):

    ViT, n = num_images * (res / patch)^2 tokens, width w, mlp m, LLM width d:
        2 n (p^2 3 w + depth (4 w^2 + 2 w m) + w d)     patch conv, q/k/v/out, MLP, projector head
      + depth * 4 n_i^2 w * num_images                  QK^T and AV, per image (n_i tokens each)
    LLM, L = n + text_len positions (the trainer feeds text[:-1] of text_len + 1 tokens):
        2 L depth (2 N H d + 2 K H d + 3 d F)           q and out; k and v (GQA); gate, up, down
      + depth * 4 L^2 N H                               QK^T and AV over the full masked L x L
      + 2 text_len V d                                  tied-embedding logits, text positions only

N/K heads/kv-heads, H head dim, F mlp dim, V vocab (paligemma2-facts.md §1.1-§1.3). The prefix-LM
attention is counted dense because big_vision (and this project's model) computes the whole masked
matrix. Norms, softmax, soft-caps and remat recomputation are left out: this is model FLOPs, not
hardware FLOPs. Tests check the forward terms against the matmuls of the traced model, exactly.

Table 1 of the paper (facts §3.1) gives measured relative costs on TPUs in the pretraining setup;
`cost_table` puts the FLOP ratios beside them. For 3B and 10B the FLOP ratios come out at 0.65-1.0x
the measured ones (attention over 1024-4096 image tokens runs below matmul utilisation), and the
paper's 28B at 224/448 is ~1.6-1.8x dearer than its FLOPs (measured time includes the larger model's
sharding and communication), so the ratio column is informative, not a check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from model.config import FAMILIES, PaliGemmaConfig, config_for

# Paper Table 1: relative training cost per example, 3B@224 = 1.0 (facts §3.1).
TABLE1_RELATIVE_COST: dict[tuple[str, int], float] = {
    ("3b", 224): 1.0, ("3b", 448): 4.6, ("3b", 896): 23.5,
    ("10b", 224): 3.7, ("10b", 448): 18.3, ("10b", 896): 67.7,
    ("28b", 224): 18.9, ("28b", 448): 63.5, ("28b", 896): 155.6,
}
# Prefix + suffix tokens in pretraining: 128 in stage 1 (224px), 512 in stage 2 (448/896px) (facts §1.4).
PRETRAIN_TEXT_LEN: dict[int, int] = {224: 128, 448: 512, 896: 512}

# Accelerator memory in GiB, for memory_plan.
DEVICE_MEMORY_GIB: dict[str, float] = {
    "tpu-v5e": 16, "tpu-v5p": 95, "tpu-v4": 32, "a100-40g": 40, "a100-80g": 80, "h100": 80, "h200": 141,
}
# fp32 params + fp32 grads + Adam's fp32 mu and nu (big_vision fine-tunes in fp32; facts §1.5).
BYTES_PER_PARAM_TRAINING = 4 + 4 + 8
ACTIVATION_BYTES = 4  # float32 activations (facts §1.3)


# -- parameters ------------------------------------------------------------------------------------
def vision_param_count(config: PaliGemmaConfig) -> int:
    """SigLIP encoder plus the linear projector `img/head` (facts §1.2, §1.5)."""
    v, d = config.vision, config.llm.width
    w, m, p = v.width, v.mlp_dim, v.patch_size
    block = 2 * 2 * w + 4 * (w * w + w) + (w * m + m) + (m * w + w)  # 2 LayerNorms, q/k/v/out, MLP
    return (p * p * 3 * w + w) + v.num_patches * w + v.depth * block + 2 * w + (w * d + d)


def llm_param_count(config: PaliGemmaConfig) -> int:
    """Gemma 2 decoder with tied embeddings (facts §1.3, §1.5)."""
    l = config.llm
    d, h = l.width, l.head_dim
    norms = (4 if l.post_norms else 2) * d
    layer = norms + 2 * l.num_heads * d * h + 2 * l.num_kv_heads * d * h + 3 * d * l.mlp_dim
    return l.vocab_size * d + l.depth * layer + d


def param_count(config: PaliGemmaConfig) -> int:
    return vision_param_count(config) + llm_param_count(config)


def params_billions(config: PaliGemmaConfig) -> float:
    """Parameters in billions to one decimal, as the paper's Table 1 prints them (3.0 / 9.7 / 27.7)."""
    return round(param_count(config) / 1e9, 1)


# -- FLOPs -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForwardFlops:
    """Forward-pass FLOPs of one example, by term of the module docstring's formula."""

    vit_matmul: float
    vit_attention: float
    llm_matmul: float
    llm_attention: float
    logits: float

    @property
    def forward(self) -> float:
        return self.vit_matmul + self.vit_attention + self.llm_matmul + self.llm_attention + self.logits

    @property
    def training(self) -> float:
        return 3 * self.forward


def forward_flops(config: PaliGemmaConfig, text_len: int, num_images: int = 1) -> ForwardFlops:
    """The forward FLOPs of one example with `text_len` text positions and `num_images` images."""
    if text_len < 1 or num_images < 1:
        raise ValueError(f"text_len and num_images must be >= 1, got {text_len} and {num_images}")
    v, l = config.vision, config.llm
    n_i = v.num_patches
    n = num_images * n_i
    w, d = v.width, l.width
    vit_per_token = v.patch_size ** 2 * 3 * w + v.depth * (4 * w * w + 2 * w * v.mlp_dim) + w * d
    seq = n + text_len
    q_dim, kv_dim = l.num_heads * l.head_dim, l.num_kv_heads * l.head_dim
    llm_per_token = l.depth * (2 * q_dim * d + 2 * kv_dim * d + 3 * d * l.mlp_dim)
    return ForwardFlops(
        vit_matmul=2.0 * n * vit_per_token,
        vit_attention=4.0 * v.depth * n_i * n_i * w * num_images,
        llm_matmul=2.0 * seq * llm_per_token,
        llm_attention=4.0 * l.depth * seq * seq * q_dim,
        logits=2.0 * text_len * l.vocab_size * d,
    )


def flops_per_example(config: PaliGemmaConfig, text_len: int, num_images: int = 1) -> float:
    """Training FLOPs (forward + backward) of one example; see the module docstring for the formula."""
    return forward_flops(config, text_len, num_images).training


# -- the size x resolution table -------------------------------------------------------------------
@dataclass(frozen=True)
class CostEntry:
    config: str
    size: str
    resolution: int
    text_len: int
    params: int
    flops_per_example: float
    relative_cost: float  # FLOPs relative to the family's smallest size at its lowest resolution
    paper_relative_cost: float | None  # Table 1, PaliGemma 2 family only
    ratio: float | None  # relative_cost / paper_relative_cost


def cost_table(text_len: int | Mapping[int, int], family: str = "paligemma2") -> list[CostEntry]:
    """One entry per (size, resolution) of `family`, sizes outer, resolutions inner.

    `text_len` is one length for every cell (a transfer's text_len) or a map resolution -> length;
    PRETRAIN_TEXT_LEN reproduces the setup the paper measured Table 1 in.
    """
    if family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    spec = FAMILIES[family]
    lengths = text_len if isinstance(text_len, Mapping) else {r: text_len for r in spec["resolutions"]}
    missing = [r for r in spec["resolutions"] if r not in lengths]
    if missing:
        raise KeyError(f"text_len map has no entry for resolution(s) {missing}; expected keys "
                       f"{list(spec['resolutions'])}")
    cells = [config_for(s, r) for s in spec["sizes"] for r in spec["resolutions"]]
    flops = {c.name: flops_per_example(c, lengths[c.resolution]) for c in cells}
    base = flops[cells[0].name]
    entries = []
    for c in cells:
        relative = flops[c.name] / base
        paper = TABLE1_RELATIVE_COST.get((c.size, c.resolution)) if family == "paligemma2" else None
        entries.append(CostEntry(
            config=c.name, size=c.size, resolution=c.resolution, text_len=lengths[c.resolution],
            params=param_count(c), flops_per_example=flops[c.name], relative_cost=relative,
            paper_relative_cost=paper, ratio=None if paper is None else relative / paper))
    return entries


def cost_table_json(entries: list[CostEntry]) -> list[dict]:
    """JSON-ready records (config, params, flops_per_example, ...) of a cost table."""
    return [asdict(e) for e in entries]


def format_cost_table(entries: list[CostEntry]) -> str:
    """Markdown: a size x resolution grid of relative cost beside Table 1, then absolute numbers."""
    sizes = list(dict.fromkeys(e.size for e in entries))
    resolutions = list(dict.fromkeys(e.resolution for e in entries))
    cell = {(e.size, e.resolution): e for e in entries}
    has_paper = any(e.paper_relative_cost is not None for e in entries)
    title = "Relative training cost per example: " + (
        "FLOPs (ours) / paper Table 1 (ratio)" if has_paper else "FLOPs")
    lines = [title, "",
             "| size | params | " + " | ".join(f"{r}px" for r in resolutions) + " |",
             "|---|---|" + "---|" * len(resolutions)]
    for s in sizes:
        row = [s, _si(cell[s, resolutions[0]].params, giga="B")]
        for r in resolutions:
            e = cell[s, r]
            row.append(f"{e.relative_cost:.2f}" if e.paper_relative_cost is None else
                       f"{e.relative_cost:.2f} / {e.paper_relative_cost:.1f} ({e.ratio:.2f})")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| config | text_len | params | training FLOPs / example |", "|---|---|---|---|"]
    lines += [f"| {e.config} | {e.text_len} | {e.params:,} | {_si(e.flops_per_example)} |"
              for e in entries]
    return "\n".join(lines) + "\n"


def _si(x: float, giga: str = "G") -> str:
    """3 significant digits with an SI suffix: 3032094960 -> '3.03G' (or '3.03B' for parameters)."""
    for suffix, scale in (("P", 1e15), ("T", 1e12), (giga, 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


# -- memory ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device for training with FSDP over `num_devices` (params, grads, Adam sharded)."""

    config: str
    device: str
    num_devices: int
    batch_size: int
    text_len: int
    state_bytes: int  # params + grads + Adam state, whole model
    gathered_layer_bytes: int  # one LLM layer all-gathered for its matmuls
    activation_bytes_per_example: int
    bytes_per_device: int
    device_bytes: int

    @property
    def fits(self) -> bool:
        return self.bytes_per_device <= self.device_bytes


def activation_bytes_per_example(config: PaliGemmaConfig, text_len: int, num_images: int = 1) -> int:
    """A rough activation footprint with per-layer remat (big_vision: scan + `nothing_saveable`).

    Kept: each layer's input (ViT and LLM residual streams). Live at the peak: one LLM layer being
    recomputed with its gradient (q/k/v, attention probabilities, MLP hidden) and the text logits
    with their gradient. An estimate to within a small factor, enough to choose a device count.
    """
    v, l = config.vision, config.llm
    n = num_images * v.num_patches
    seq = n + text_len
    residuals = v.depth * n * v.width + l.depth * seq * l.width
    heads = l.num_heads * l.head_dim + 2 * l.num_kv_heads * l.head_dim
    layer = seq * (heads + 3 * l.mlp_dim) + l.num_heads * seq * seq
    logits = text_len * l.vocab_size
    return ACTIVATION_BYTES * (residuals + 2 * layer + 2 * logits)


def memory_plan(config: PaliGemmaConfig, text_len: int, batch_size: int, device: str,
                num_devices: int) -> MemoryPlan:
    """Estimate per-device memory for FSDP training of `batch_size` examples on `num_devices`."""
    if device not in DEVICE_MEMORY_GIB:
        raise KeyError(f"unknown device {device!r}; known: {', '.join(DEVICE_MEMORY_GIB)}")
    if num_devices < 1 or batch_size < 1:
        raise ValueError(f"num_devices and batch_size must be >= 1, got {num_devices} and {batch_size}")
    params = param_count(config)
    l = config.llm
    layer_params = (llm_param_count(config) - l.vocab_size * l.width - l.width) // l.depth
    state = BYTES_PER_PARAM_TRAINING * params
    gathered = 4 * layer_params
    act = activation_bytes_per_example(config, text_len)
    per_device = state // num_devices + gathered + math.ceil(batch_size / num_devices) * act
    return MemoryPlan(config=config.name, device=device, num_devices=num_devices,
                      batch_size=batch_size, text_len=text_len, state_bytes=state,
                      gathered_layer_bytes=gathered, activation_bytes_per_example=act,
                      bytes_per_device=per_device, device_bytes=int(DEVICE_MEMORY_GIB[device] * 2**30))


def min_devices(config: PaliGemmaConfig, text_len: int, batch_size: int, device: str,
                max_devices: int = 4096) -> int | None:
    """The fewest devices (a power of two) whose plan fits, or None if even max_devices do not."""
    n = 1
    while n <= max_devices:
        if memory_plan(config, text_len, batch_size, device, n).fits:
            return n
        n *= 2
    return None

