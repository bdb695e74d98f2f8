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

N/K heads/kv-heads, H head dim, F mlp dim, V vocab (docs/paligemma2-facts.md §1.1-§1.3). The prefix-LM
attention is counted dense because big_vision (and this project's model) computes the whole masked
matrix. Norms, softmax, soft-caps and remat recomputation are left out: this is model FLOPs, not
hardware FLOPs. Tests check the forward terms against the matmuls of the traced model, exactly.

Table 1 of the paper (facts §3.1) gives measured relative costs on TPUs in the pretraining setup;
`cost_table` puts the FLOP ratios beside them. For 3B and 10B the FLOP ratios come out at 0.65-1.0x
the measured ones (attention over 1024-4096 image tokens runs below matmul utilisation), and the
paper's 28B at 224/448 is ~1.6-1.8x dearer than its FLOPs (measured time includes the larger model's
sharding and communication), so the ratio column is informative, not a check.

Memory (bytes per device of a training step on a (data, model) mesh) and the mesh `auto` picks are at
the end of this file; docs/memory-plan.md has the rule, the tables and the checks against XLA.
"""

from __future__ import annotations

import functools
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
# Memory per accelerator, GiB, as the vendors state it (their "GB"; read as GiB here, which the
# USABLE_FRACTION margin below more than covers if a vendor meant 10^9 bytes):
#   h200      141 GB HBM3e  NVIDIA H200 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h200)
#   h100       80 GB HBM3   NVIDIA H100 Tensor Core GPU datasheet, SXM5 (nvidia.com/en-us/data-center/h100)
#   a100-80g   80 GB HBM2e  NVIDIA A100 Tensor Core GPU datasheet, 80GB (nvidia.com/en-us/data-center/a100)
#   a100-40g   40 GB HBM2   the same datasheet, 40GB
#   tpu-v5e    16 GB HBM2   Cloud TPU v5e system architecture (cloud.google.com/tpu/docs/v5e)
#   tpu-v5p    95 GB HBM2e  Cloud TPU v5p system architecture (cloud.google.com/tpu/docs/v5p)
#   tpu-v4     32 GB HBM2   Cloud TPU v4 system architecture (cloud.google.com/tpu/docs/v4)
# On a real device harness/run/placement.py prefers the allocator's own limit (device.memory_stats()
# ["bytes_limit"]), which also reflects JAX's GPU preallocation fraction (XLA_PYTHON_CLIENT_MEM_FRACTION).
DEVICE_MEMORY_GIB: dict[str, float] = {
    "h200": 141, "h100": 80, "a100-80g": 80, "a100-40g": 40, "tpu-v5e": 16, "tpu-v5p": 95, "tpu-v4": 32,
}
PLAN_DEVICES = ("h200", "h100", "a100-80g", "tpu-v5e", "tpu-v5p")  # the CLI's --device choices
# A plan fits when it needs at most this share of a device: the runtime, XLA's workspace and
# fragmentation take the rest.
USABLE_FRACTION = 0.9

# float32 master params, float32 grads, Adam's float32 mu and nu (big_vision fine-tunes in fp32; facts §1.5).
PARAM_BYTES, GRAD_BYTES, OPT_BYTES = 4, 4, 8
BYTES_PER_PARAM_TRAINING = PARAM_BYTES + GRAD_BYTES + OPT_BYTES

# Transient working sets, in float32 copies of the largest tensor of each stage, live at once while
# that stage's backward runs: attention logits / probabilities / their gradients (N x L x L), the MLP's
# gate / up / hidden and their gradients (L x F), and the loss head's logits, soft-cap, log-softmax
# and their gradients (T x V). Measured against XLA's buffer assignment for nano configs on CPU
# (tests/test_memory_plan.py; docs/memory-plan.md); GPU and TPU XLA fuse more, so these err high there.
ATTENTION_COPIES, MLP_COPIES, LOGIT_COPIES = 8, 6, 6


def _dtype_bytes(compute_dtype: str) -> int:
    sizes = {"float32": 4, "bfloat16": 2, "float16": 2}
    if compute_dtype not in sizes:
        raise ValueError(f"compute_dtype {compute_dtype!r}; expected one of {', '.join(sizes)}")
    return sizes[compute_dtype]


@dataclass(frozen=True)
class Activations:
    """Activation bytes of one example on one device (its share of the model axis)."""

    saved: int  # kept from the forward pass for the backward: every layer's input, and with
    #             remat=False every layer's matmul outputs (the dots_saveable policy)
    working: int  # the largest transient set: one layer's backward (ViT or LLM), or the loss head

    @property
    def total(self) -> int:
        return self.saved + self.working


def activations(config: PaliGemmaConfig, text_len: int, *, remat: bool = False,
                compute_dtype: str = "float32", model_parallel: int = 1, num_images: int = 1) -> Activations:
    """What the train step (model/paligemma.py under harness/cell/train.py) keeps per example.

    Each scanned layer runs under jax.checkpoint: remat=False saves its matmul outputs
    (dots_saveable; the einsums accumulate in float32, so these are float32 whatever the compute
    dtype), remat=True saves nothing but the layer input (the scan carry, in the compute dtype).
    With a model axis, head- and hidden-sized tensors are split over it; width-sized ones are not.
    """
    if text_len < 1 or num_images < 1 or model_parallel < 1:
        raise ValueError(f"text_len, num_images and model_parallel must be >= 1, got {text_len}, "
                         f"{num_images} and {model_parallel}")
    cdt, m = _dtype_bytes(compute_dtype), model_parallel
    v, l = config.vision, config.llm
    n = v.num_patches  # tokens per image; attention in the ViT is per image
    seq = num_images * n + text_len
    carries = cdt * (num_images * v.depth * n * v.width + l.depth * seq * l.width)
    dots = 0
    if not remat:
        vit_split = 3 * v.width + v.num_heads * n + v.width + v.mlp_dim  # q/k/v, logits, AV, MLP hidden
        llm_split = (2 * l.num_heads * l.head_dim + 2 * l.num_kv_heads * l.head_dim + l.num_heads * seq
                     + 2 * l.mlp_dim)  # q, AV, k/v, logits, gate/up
        dots = 4 * (num_images * v.depth * n * (vit_split / m + 2 * v.width)
                    + l.depth * seq * (llm_split / m + 2 * l.width))
    working = 4 * max(
        (ATTENTION_COPIES * v.num_heads * n * n + MLP_COPIES * n * v.mlp_dim) * num_images / m,
        (ATTENTION_COPIES * l.num_heads * seq * seq + MLP_COPIES * seq * l.mlp_dim) / m,
        LOGIT_COPIES * text_len * l.vocab_size)
    return Activations(saved=int(carries + dots), working=int(working))


def activation_bytes_per_example(config: PaliGemmaConfig, text_len: int, num_images: int = 1, *,
                                 remat: bool = False, compute_dtype: str = "float32",
                                 model_parallel: int = 1) -> int:
    """activations(...).total: the bytes one example adds to a device's peak."""
    return activations(config, text_len, remat=remat, compute_dtype=compute_dtype,
                       model_parallel=model_parallel, num_images=num_images).total


def model_parallel_options(config: PaliGemmaConfig) -> list[int]:
    """Model-axis sizes the partition rules split evenly: powers of two dividing the LLM's heads, KV
    heads and MLP hidden and the ViT's heads and MLP hidden (3B: 1, 2, 4; 10B: up to 8; 28B: up to 16)."""
    v, l = config.vision, config.llm
    g = math.gcd(l.num_heads, l.num_kv_heads, l.mlp_dim, v.num_heads, v.mlp_dim)
    return [2**k for k in range(g.bit_length()) if g % 2**k == 0]


def device_bytes(device: str) -> int:
    """Stated memory of one `device` in bytes (DEVICE_MEMORY_GIB)."""
    if device not in DEVICE_MEMORY_GIB:
        raise KeyError(f"unknown device {device!r}; known: {', '.join(DEVICE_MEMORY_GIB)}")
    return int(DEVICE_MEMORY_GIB[device] * 2**30)


@functools.lru_cache(maxsize=64)
def _param_shapes(config: PaliGemmaConfig) -> tuple:
    from model.paligemma import param_shapes

    return param_shapes(config)


def param_shard_elements(config: PaliGemmaConfig, data: int, model: int) -> dict[str, int]:
    """{parameter path: elements one device holds} under model/sharding.py's rules on a (data, model)
    mesh with the minor data axis `data_minor` picks: each dim divided by the mesh axes its PartitionSpec
    entry names, a dim the rules leave whole counted whole (replicated). The same rules place the params,
    grads and Adam's mu and nu in training."""
    from model.sharding import mesh_shape, param_specs, shard_shape

    axes = mesh_shape(data, model, data_minor(config, data, model))
    return {path: math.prod(shard_shape(shape, spec, axes))
            for path, (shape, spec) in param_specs(_param_shapes(config), axes).items()}


@functools.lru_cache(maxsize=1024)
def data_minor(config: PaliGemmaConfig, data: int, model: int) -> int:
    """The minor data axis a (data, model) mesh of `config` is built with (model.sharding.data_minor_size):
    1 unless splitting the data devices over two dims holds fewer parameters per device."""
    from model.sharding import data_minor_size

    return data_minor_size(_param_shapes(config), data, model)


@functools.lru_cache(maxsize=1024)
def sharded_param_count(config: PaliGemmaConfig, data: int, model: int) -> int:
    """Parameters per device on a (data, model) mesh under the partition rules (param_shard_elements)."""
    return sum(param_shard_elements(config, data, model).values())


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device of one training step on a (data, model) mesh: params, grads and Adam state as
    model/sharding.py's rules place them (FSDP over data, heads / MLP hidden / vocabulary over model, what
    no dim of which divides the mesh kept whole), the batch over data."""

    config: str
    device: str
    num_devices: int
    model_parallel: int
    batch_size: int
    text_len: int
    remat: bool
    compute_dtype: str
    state_bytes: int  # params + grads + Adam state of the whole model
    params_bytes: int  # per device, and so on below
    grads_bytes: int
    opt_bytes: int
    gathered_bytes: int  # FSDP: the largest layer (or the embedding) gathered whole, with its gradient
    activation_bytes_per_example: int
    activation_bytes: int
    device_bytes: int  # usable: USABLE_FRACTION of the device's memory
    data_minor: int = 1  # the minor data axis the mesh is built with (data_minor)

    @property
    def data_parallel(self) -> int:
        return self.num_devices // self.model_parallel

    @property
    def bytes_per_device(self) -> int:
        return (self.params_bytes + self.grads_bytes + self.opt_bytes + self.gathered_bytes
                + self.activation_bytes)

    @property
    def fits(self) -> bool:
        return self.bytes_per_device <= self.device_bytes

    @property
    def mesh(self) -> str:
        return f"{self.data_parallel}x{self.model_parallel}"

    @property
    def layout(self) -> str:
        """The mesh with its minor data axis, where it has one: '256x1 (data 32x8)'."""
        if self.data_minor == 1:
            return self.mesh
        return f"{self.mesh} (data {self.data_parallel // self.data_minor}x{self.data_minor})"


def memory_plan(config: PaliGemmaConfig, text_len: int, batch_size: int, device: str, num_devices: int,
                *, model_parallel: int = 1, remat: bool = False, compute_dtype: str = "float32",
                capacity_bytes: int | None = None) -> MemoryPlan:
    """Per-device memory of training `batch_size` examples on `num_devices` devices of kind `device`,
    `model_parallel` of them per model group. `capacity_bytes` (a device's memory) overrides the table,
    e.g. host memory on a CPU or the allocator's limit on a real device."""
    if num_devices < 1 or batch_size < 1 or model_parallel < 1 or num_devices % model_parallel:
        raise ValueError(f"need num_devices >= 1, batch_size >= 1 and model_parallel dividing num_devices; "
                         f"got {num_devices}, {batch_size} and {model_parallel}")
    capacity = device_bytes(device) if capacity_bytes is None else capacity_bytes
    data = num_devices // model_parallel
    params = param_count(config)
    shard = sharded_param_count(config, data, model_parallel)
    l, v = config.llm, config.vision
    llm_layer = (llm_param_count(config) - l.vocab_size * l.width - l.width) // l.depth
    vit_layer = 4 * v.width + 4 * (v.width * v.width + v.width) + 2 * v.width * v.mlp_dim + v.mlp_dim + v.width
    # The embedder's vocabulary is split over 'model' where it divides; FSDP gathers the rest over 'data'.
    embedder = l.vocab_size * l.width // (model_parallel if l.vocab_size % model_parallel == 0 else 1)
    largest = max(max(llm_layer, vit_layer) // model_parallel, embedder)
    gathered = (_dtype_bytes(compute_dtype) + GRAD_BYTES) * largest if data > 1 else 0
    per_example = activation_bytes_per_example(config, text_len, remat=remat, compute_dtype=compute_dtype,
                                               model_parallel=model_parallel)
    return MemoryPlan(
        config=config.name, device=device, num_devices=num_devices, model_parallel=model_parallel,
        batch_size=batch_size, text_len=text_len, remat=remat, compute_dtype=compute_dtype,
        state_bytes=BYTES_PER_PARAM_TRAINING * params, params_bytes=PARAM_BYTES * shard,
        grads_bytes=GRAD_BYTES * shard, opt_bytes=OPT_BYTES * shard, gathered_bytes=gathered,
        activation_bytes_per_example=per_example, activation_bytes=-(-batch_size // data) * per_example,
        device_bytes=int(capacity * USABLE_FRACTION), data_minor=data_minor(config, data, model_parallel))


def mesh_candidates(config: PaliGemmaConfig, batch_size: int, num_devices: int) -> list[int]:
    """Model-axis sizes, smallest first, that divide num_devices, split the model evenly
    (model_parallel_options) and leave a data axis that divides the batch."""
    return [m for m in model_parallel_options(config)
            if num_devices % m == 0 and batch_size % (num_devices // m) == 0]


def mesh_plans(config: PaliGemmaConfig, *, text_len: int, batch_size: int, device: str, num_devices: int,
               remat: bool = False, compute_dtype: str = "float32",
               capacity_bytes: int | None = None) -> list[MemoryPlan]:
    """The plan of every mesh_candidates mesh on `num_devices`, model axis smallest first."""
    return [memory_plan(config, text_len, batch_size, device, num_devices, model_parallel=m, remat=remat,
                        compute_dtype=compute_dtype, capacity_bytes=capacity_bytes)
            for m in mesh_candidates(config, batch_size, num_devices)]


def plan_mesh(config: PaliGemmaConfig, *, text_len: int, batch_size: int, device: str, num_devices: int,
              remat: bool = False, compute_dtype: str = "float32",
              capacity_bytes: int | None = None) -> MemoryPlan:
    """The mesh `auto` picks on `num_devices` devices, with its plan.

    The rule: FSDP over `data` first (model_parallel 1: every device holds 1/N of the state and
    batch/N examples, and nothing but the gathered layer is replicated); the `model` axis doubles only
    while the plan does not fit, since it splits activations and layers further but costs collectives
    in every layer. A mesh is a candidate only when its model axis divides the heads, KV heads and
    MLP hidden of both towers and its data axis divides the batch. Raises ValueError (one line) when
    no candidate fits.
    """
    plans = mesh_plans(config, text_len=text_len, batch_size=batch_size, device=device,
                       num_devices=num_devices, remat=remat, compute_dtype=compute_dtype,
                       capacity_bytes=capacity_bytes)
    for plan in plans:
        if plan.fits:
            return plan
    if not plans:
        raise ValueError(
            f"{config.name}: no (data, model) mesh on {num_devices} devices has a data axis dividing batch "
            f"{batch_size} and a model axis in {model_parallel_options(config)}")
    best = min(plans, key=lambda p: p.bytes_per_device)
    raise ValueError(
        f"{config.name} at batch {batch_size}, text_len {text_len}{', remat' if remat else ''} does not fit "
        f"{num_devices} x {device}: the best mesh ({best.mesh}) needs {_gib(best.bytes_per_device)} per "
        f"device, {_gib(best.device_bytes)} usable")


def auto_model_parallel(config: PaliGemmaConfig, *, text_len: int, batch_size: int, device: str,
                        num_devices: int, remat: bool, compute_dtype: str = "float32",
                        capacity_bytes: int | None = None) -> int:
    """The model-axis size `mesh: auto` uses (data = num_devices // it); see plan_mesh for the rule.
    Raises ValueError when nothing fits."""
    return plan_mesh(config, text_len=text_len, batch_size=batch_size, device=device,
                     num_devices=num_devices, remat=remat, compute_dtype=compute_dtype,
                     capacity_bytes=capacity_bytes).model_parallel


def min_devices(config: PaliGemmaConfig, text_len: int, batch_size: int, device: str,
                max_devices: int = 4096, *, remat: bool = False, compute_dtype: str = "float32",
                capacity_bytes: int | None = None) -> int | None:
    """The fewest devices (a power of two) on which plan_mesh finds a fitting mesh, or None."""
    return getattr(smallest_mesh(config, text_len, batch_size, device, max_devices, remat=remat,
                                 compute_dtype=compute_dtype, capacity_bytes=capacity_bytes),
                   "num_devices", None)


def smallest_mesh(config: PaliGemmaConfig, text_len: int, batch_size: int, device: str,
                  max_devices: int = 4096, *, remat: bool = False, compute_dtype: str = "float32",
                  capacity_bytes: int | None = None) -> MemoryPlan | None:
    """plan_mesh on the fewest devices (a power of two, up to max_devices) where one fits, or None."""
    n = 1
    while n <= max_devices:
        try:
            return plan_mesh(config, text_len=text_len, batch_size=batch_size, device=device, num_devices=n,
                             remat=remat, compute_dtype=compute_dtype, capacity_bytes=capacity_bytes)
        except ValueError:
            n *= 2
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


# -- the memory table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanEntry:
    """One config's line of `cost --plan`: the smallest fitting mesh and `auto`'s choice on N devices."""

    config: str
    device: str
    batch_size: int
    text_len: int
    remat: bool
    compute_dtype: str
    smallest: MemoryPlan | None  # on the fewest devices (a power of two) where a mesh fits
    devices: int  # the device count `auto` was asked about
    auto: MemoryPlan | None  # None: nothing fits `devices`
    auto_error: str | None


def plan_table(configs: list[PaliGemmaConfig], *, text_len: int | Mapping[int, int], batch_size: int,
               device: str, devices: int, remat: bool = False, compute_dtype: str = "float32",
               max_devices: int = 4096) -> list[PlanEntry]:
    """The smallest mesh and the `auto` mesh on `devices` devices, per config."""
    device_bytes(device)  # unknown device: fail before the loop
    entries = []
    for c in configs:
        t = text_len[c.resolution] if isinstance(text_len, Mapping) else text_len
        kw = {"remat": remat, "compute_dtype": compute_dtype}
        smallest = smallest_mesh(c, t, batch_size, device, max_devices, **kw)
        try:
            auto, error = plan_mesh(c, text_len=t, batch_size=batch_size, device=device,
                                    num_devices=devices, **kw), None
        except ValueError as e:
            auto, error = None, str(e)
        entries.append(PlanEntry(config=c.name, device=device, batch_size=batch_size, text_len=t,
                                 remat=remat, compute_dtype=compute_dtype, smallest=smallest,
                                 devices=devices, auto=auto, auto_error=error))
    return entries


def _plan_json(plan: MemoryPlan | None) -> dict | None:
    if plan is None:
        return None
    return {**asdict(plan), "data_parallel": plan.data_parallel, "bytes_per_device": plan.bytes_per_device,
            "fits": plan.fits}


def plan_table_json(entries: list[PlanEntry]) -> list[dict]:
    return [{**{k: v for k, v in asdict(e).items() if k not in ("smallest", "auto")},
             "smallest": _plan_json(e.smallest), "auto": _plan_json(e.auto)} for e in entries]


def format_plan_table(entries: list[PlanEntry]) -> str:
    """Markdown: per config, GiB per device on the smallest mesh that fits, and auto's mesh on N."""
    if not entries:
        return "(no configs)\n"
    e0 = entries[0]
    usable = int(device_bytes(e0.device) * USABLE_FRACTION)
    title = (f"Training memory per device on {e0.device} ({_gib(usable)} usable of "
             f"{DEVICE_MEMORY_GIB[e0.device]:g}), batch {e0.batch_size}, {e0.compute_dtype} compute"
             f"{', remat' if e0.remat else ''}; GiB per device on the smallest mesh that fits "
             f"(mesh = data x model)")
    header = ("| config | text | devices | mesh | params | grads | Adam | gathered | activations | total "
              f"| auto on {e0.devices} |")
    lines = [title, "", header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    g = lambda n: f"{n / 2**30:.1f}"
    for e in entries:
        s, a = e.smallest, e.auto
        auto = f"{a.layout}: {g(a.bytes_per_device)}" if a is not None else "does not fit"
        if s is None:
            lines.append(f"| {e.config} | {e.text_len} | - | - | - | - | - | - | - | does not fit | {auto} |")
            continue
        lines.append(f"| {e.config} | {e.text_len} | {s.num_devices} | {s.layout} | {g(s.params_bytes)} | "
                     f"{g(s.grads_bytes)} | {g(s.opt_bytes)} | {g(s.gathered_bytes)} | {g(s.activation_bytes)} | "
                     f"{g(s.bytes_per_device)} | {auto} |")
    return "\n".join(lines) + "\n"
