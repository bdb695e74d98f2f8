"""Checkpoints in, checkpoints out: big_vision `.npz`, Hugging Face safetensors directories, orbax.

All loaders return (config, params) with params a nested dict named like big_vision's tree
(docs/paligemma2-facts.md §1.5), so the `.npz` loader only unflattens and the HF loader is a table of renames
with fixed reshapes. Every loader checks the file against the config's parameter shapes and fails on the
first missing, extra or mis-shaped tensor, naming the key and both shapes.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import ml_dtypes
import numpy as np

from model.config import CONFIGS, LLMConfig, PaliGemmaConfig, VisionConfig, get_config
from model.paligemma import Params, param_shapes


class CheckpointError(ValueError):
    """A checkpoint does not match the model it is loaded into."""


# ----------------------------------------------------------------------------------------------
# Nested <-> flat '/'-joined dicts, and the shape check shared by all loaders.

def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.update(flatten(value, path + "/") if isinstance(value, dict) else {path: value})
    return out


def unflatten(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


def check_against(flat: dict[str, Any], config: PaliGemmaConfig, source: str) -> None:
    """Raises CheckpointError naming the first key that is missing, extra or of the wrong shape."""
    expected = {k: tuple(v.shape) for k, v in flatten(param_shapes(config)).items()}
    for key in sorted(expected.keys() - flat.keys()):
        raise CheckpointError(f"{source}: missing parameter {key!r} (expected shape {expected[key]}) "
                              f"for config {config.name!r}")
    for key in sorted(flat.keys() - expected.keys()):
        raise CheckpointError(f"{source}: unexpected parameter {key!r} with shape {tuple(flat[key].shape)}; "
                              f"config {config.name!r} has no such parameter")
    for key in sorted(expected):
        if tuple(flat[key].shape) != expected[key]:
            raise CheckpointError(f"{source}: parameter {key!r} has shape {tuple(flat[key].shape)}, "
                                  f"expected {expected[key]} for config {config.name!r}")


def _as_config(config: str | PaliGemmaConfig) -> PaliGemmaConfig:
    return get_config(config) if isinstance(config, str) else config


def _cast(params: Params, dtype: Any) -> Params:
    return params if dtype is None else jax.tree.map(lambda x: np.asarray(x).astype(dtype), params)


# ----------------------------------------------------------------------------------------------
# big_vision .npz

def _bf16(x: np.ndarray) -> np.ndarray:
    """np.savez writes bfloat16 as 2-byte void; view it back (docs/paligemma2-facts.md §1.5)."""
    return x.view(ml_dtypes.bfloat16) if x.dtype.kind == "V" and x.dtype.itemsize == 2 else x


def read_npz(path: str) -> dict[str, np.ndarray]:
    """The flat arrays of a big_vision .npz, with the optional leading 'params/' removed."""
    with np.load(path, allow_pickle=False) as data:
        return {key.removeprefix("params/"): _bf16(data[key]) for key in data.files}


def infer_npz_config(flat: dict[str, np.ndarray], source: str) -> PaliGemmaConfig:
    """The family-table config whose shapes these are (sizes, depths, heads, patch, resolution)."""
    def shape(key):
        if key not in flat:
            raise CheckpointError(f"{source}: cannot infer the config, {key!r} is missing")
        return flat[key].shape

    p, _, _, vw = shape("img/embedding/kernel")
    vis = "img/Transformer/encoderblock/"
    vdepth, _, vheads, _ = shape(vis + "MultiHeadDotProductAttention_0/query/kernel")
    vocab, width = shape("llm/embedder/input_embedding")
    depth, mlp_dim, _ = shape("llm/layers/mlp/linear")
    if "llm/layers/attn/qkv_einsum/w" in flat:
        _, _, heads, _, head_dim = shape("llm/layers/attn/qkv_einsum/w")
        kv_heads = heads
    else:
        _, heads, _, head_dim = shape("llm/layers/attn/q_einsum/w")
        kv_heads = shape("llm/layers/attn/kv_einsum/w")[2]
    inferred = dict(
        vision=dict(width=vw, depth=vdepth, mlp_dim=shape(vis + "MlpBlock_0/Dense_0/kernel")[-1],
                    num_heads=vheads, patch_size=p,
                    image_size=int(round(shape("img/pos_embedding")[1] ** 0.5)) * p),
        llm=dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads, num_kv_heads=kv_heads,
                 head_dim=head_dim, vocab_size=vocab, post_norms="llm/layers/post_ffw_norm/scale" in flat))
    for config in CONFIGS.values():
        have = dict(vision=dataclasses.asdict(config.vision), llm=dataclasses.asdict(config.llm))
        if all(have[part][k] == v for part, fields in inferred.items() for k, v in fields.items()):
            return config
    raise CheckpointError(f"{source}: no config in the family table has these shapes {inferred}; "
                          f"pass the config explicitly")


def load_npz(path: str, config: str | PaliGemmaConfig | None = None,
             dtype: Any = None) -> tuple[PaliGemmaConfig, Params]:
    flat = read_npz(path)
    config = infer_npz_config(flat, path) if config is None else _as_config(config)
    check_against(flat, config, path)
    return config, _cast(unflatten(flat), dtype)


def save_npz(path: str, params: Params) -> None:
    """Writes params in the released big_vision layout: flat '/'-joined keys, stacked layers,
    bfloat16 as 2-byte void (what np.savez makes of it)."""
    np.savez(path, **{k: np.asarray(v) for k, v in flatten(params).items()})


# ----------------------------------------------------------------------------------------------
# .npz read per host: each process reads only the slices its devices hold

@dataclass(frozen=True)
class NpzMember:
    """One array of an uncompressed .npz: where its bytes start in the file, and what they are."""

    path: str
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool


def npz_members(path: str) -> dict[str, NpzMember]:
    """The arrays of an .npz written by np.savez (zip entries STORED, not deflated), without reading them.

    np.load(mmap_mode='r') does not map members of a zip, so this reads each entry's local header (30
    bytes + name + extra field, zip64 included) and its .npy header to find where the raw array begins.
    """
    members = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(f"{path}: member {info.filename!r} is compressed; a sharded load reads "
                                      f"arrays in place and needs np.savez's uncompressed layout")
            f.seek(info.header_offset)
            local = f.read(30)
            if local[:4] != b"PK\x03\x04":
                raise CheckpointError(f"{path}: member {info.filename!r} has no local zip header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            key = info.filename.removesuffix(".npy").removeprefix("params/")
            members[key] = NpzMember(path, f.tell(), tuple(shape), np.dtype(dtype), bool(fortran))
    return members


def read_member(member: NpzMember, index: tuple = (), dtype: Any = None, chunk_bytes: int = 64 << 20) -> np.ndarray:
    """member[index] (a tuple of step-1 slices, as jax.make_array_from_callback passes) cast to `dtype`.

    Reads leading-axis chunks of at most `chunk_bytes` through a memory map that is closed after each
    one, so the host holds the result and one chunk, never the whole array, whichever axes `index` cuts.
    """
    shape, ndim = member.shape, len(member.shape)
    index = tuple(index) + (slice(None),) * (ndim - len(index))

    def cast(x) -> np.ndarray:
        x = _bf16(np.asarray(x))
        return x if dtype is None else x.astype(dtype)

    if ndim == 0 or member.fortran_order:
        whole = np.memmap(member.path, dtype=member.dtype, mode="r", offset=member.offset, shape=shape,
                          order="F" if member.fortran_order else "C")
        out = cast(whole[index] if ndim else whole)
        del whole
        return out
    start, stop, _ = index[0].indices(shape[0])
    rest = index[1:]
    row_bytes = math.prod(shape[1:]) * member.dtype.itemsize
    per_chunk = max(1, chunk_bytes // max(1, row_bytes))
    parts = []
    for a in range(start, stop, per_chunk):
        b = min(stop, a + per_chunk)
        chunk = np.memmap(member.path, dtype=member.dtype, mode="r", offset=member.offset + a * row_bytes,
                          shape=(b - a,) + shape[1:])
        parts.append(cast(chunk[(slice(None),) + rest]))
        del chunk
    if not parts:
        return cast(np.empty((0,) + shape[1:], member.dtype)[(slice(None),) + rest])
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def load_sharded(path: str, config: str | PaliGemmaConfig, shardings: Any, dtype: Any = np.float32) -> Params:
    """Base params placed by `shardings` (a tree like model.sharding.param_shardings(...)), each process
    reading from disk only the slices its own devices hold.

    For an .npz every host maps the members in place (read_member); for a Hugging Face directory every
    host reads, through the safetensors headers, only the tensors of its slices (read_hf_param: the
    layers in its range one at a time, and the embedding by rows and columns). Either way a host's
    memory grows by its share of the model (plus one chunk or one layer's source tensors), not by the
    whole checkpoint: a 28B checkpoint no longer needs ~221 GB on every host. Every check of the whole
    loaders (missing, extra and mis-shaped tensors; the file's config against `config`) runs on the
    headers before any array is built, with the same messages.
    """
    config = _as_config(config)
    if os.path.isdir(path):
        return _load_hf_sharded(path, config, shardings, dtype)
    members = npz_members(path)
    check_against(members, config, path)
    targets = flatten(shardings)

    def one(key: str) -> jax.Array:
        member = members[key]
        return jax.make_array_from_callback(member.shape, targets[key],
                                            lambda index: read_member(member, index, dtype))
    return unflatten({key: one(key) for key in members})


# ----------------------------------------------------------------------------------------------
# Hugging Face safetensors directories

def _identity(x: np.ndarray) -> np.ndarray:
    """The conversion of a tensor stored as we hold it; named so a reader can tell it from the others
    (read_hf_param reads only the slice it needs of such a tensor)."""
    return x


@dataclass(frozen=True)
class Rule:
    """Our parameter `ours` is built from the HF tensors `hf` (each of shape `shapes`) by `fn`.
    Per-layer rules have '{i}' in their HF names; their results are stacked on a new leading axis."""

    ours: str
    hf: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    fn: Callable[..., np.ndarray] = _identity
    per_layer: bool = False


def _vision_rules(v: VisionConfig, out_dim: int) -> list[Rule]:
    w, m, p, hd = v.width, v.mlp_dim, v.patch_size, v.width // v.num_heads
    heads_in = lambda x: x.T.reshape(w, v.num_heads, hd)  # torch Linear (out, in) -> (in, heads, head_dim)
    rules = [
        Rule("img/embedding/kernel", ("vision_tower.embeddings.patch_embedding.weight",), ((w, 3, p, p),),
             lambda x: x.transpose(2, 3, 1, 0)),
        Rule("img/embedding/bias", ("vision_tower.embeddings.patch_embedding.bias",), ((w,),)),
        Rule("img/pos_embedding", ("vision_tower.embeddings.position_embedding.weight",),
             ((v.num_patches, w),), lambda x: x[None]),
        Rule("img/Transformer/encoder_norm/scale", ("vision_tower.post_layernorm.weight",), ((w,),)),
        Rule("img/Transformer/encoder_norm/bias", ("vision_tower.post_layernorm.bias",), ((w,),)),
        Rule("img/head/kernel", ("multi_modal_projector.linear.weight",), ((out_dim, w),), lambda x: x.T),
        Rule("img/head/bias", ("multi_modal_projector.linear.bias",), ((out_dim,),)),
    ]
    ours, hf = "img/Transformer/encoderblock/", "vision_tower.encoder.layers.{i}."
    layer = [
        ("LayerNorm_0/scale", "layer_norm1.weight", (w,), None),
        ("LayerNorm_0/bias", "layer_norm1.bias", (w,), None),
        ("LayerNorm_1/scale", "layer_norm2.weight", (w,), None),
        ("LayerNorm_1/bias", "layer_norm2.bias", (w,), None),
        ("MlpBlock_0/Dense_0/kernel", "mlp.fc1.weight", (m, w), lambda x: x.T),
        ("MlpBlock_0/Dense_0/bias", "mlp.fc1.bias", (m,), None),
        ("MlpBlock_0/Dense_1/kernel", "mlp.fc2.weight", (w, m), lambda x: x.T),
        ("MlpBlock_0/Dense_1/bias", "mlp.fc2.bias", (w,), None),
        ("MultiHeadDotProductAttention_0/out/kernel", "self_attn.out_proj.weight", (w, w),
         lambda x: x.T.reshape(v.num_heads, hd, w)),
        ("MultiHeadDotProductAttention_0/out/bias", "self_attn.out_proj.bias", (w,), None),
    ]
    for name, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        layer += [(f"MultiHeadDotProductAttention_0/{name}/kernel", f"self_attn.{proj}.weight", (w, w), heads_in),
                  (f"MultiHeadDotProductAttention_0/{name}/bias", f"self_attn.{proj}.bias", (w,),
                   lambda x: x.reshape(v.num_heads, hd))]
    return rules + [Rule(ours + o, (hf + h,), (s,), fn or _identity, per_layer=True) for o, h, s, fn in layer]


def _llm_rules(t: LLMConfig) -> list[Rule]:
    d, f, n, k, h = t.width, t.mlp_dim, t.num_heads, t.num_kv_heads, t.head_dim
    heads_in = lambda x, count: x.reshape(count, h, d).transpose(0, 2, 1)  # (count*h, d) -> (count, d, h)
    layer = "language_model.layers.{i}."
    rule = lambda ours, names, shapes, fn=_identity: Rule(
        "llm/layers/" + ours, tuple(layer + x for x in names), shapes, fn, per_layer=True)
    rules = [
        Rule("llm/embedder/input_embedding", ("language_model.embed_tokens.weight",), ((t.vocab_size, d),)),
        Rule("llm/final_norm/scale", ("language_model.norm.weight",), ((d,),)),
        rule("pre_attention_norm/scale", ["input_layernorm.weight"], ((d,),)),
        rule("attn/attn_vec_einsum/w", ["self_attn.o_proj.weight"], ((d, n * h),),
             lambda x: x.reshape(d, n, h).transpose(1, 2, 0)),
        rule("mlp/gating_einsum", ["mlp.gate_proj.weight", "mlp.up_proj.weight"], ((f, d), (f, d)),
             lambda gate, up: np.stack([gate.T, up.T])),
        rule("mlp/linear", ["mlp.down_proj.weight"], ((d, f),), lambda x: x.T),
    ]
    if n == k:
        rules.append(rule("attn/qkv_einsum/w", [f"self_attn.{x}_proj.weight" for x in "qkv"], ((n * h, d),) * 3,
                          lambda q, kk, v: np.stack([heads_in(q, n), heads_in(kk, n), heads_in(v, n)])))
    else:
        rules += [rule("attn/q_einsum/w", ["self_attn.q_proj.weight"], ((n * h, d),), lambda x: heads_in(x, n)),
                  rule("attn/kv_einsum/w", ["self_attn.k_proj.weight", "self_attn.v_proj.weight"],
                       ((k * h, d),) * 2, lambda kk, v: np.stack([heads_in(kk, k), heads_in(v, k)]))]
    if t.post_norms:  # Gemma 2 names its four norms pre/post x attention/feedforward.
        rules += [rule("post_attention_norm/scale", ["post_attention_layernorm.weight"], ((d,),)),
                  rule("pre_ffw_norm/scale", ["pre_feedforward_layernorm.weight"], ((d,),)),
                  rule("post_ffw_norm/scale", ["post_feedforward_layernorm.weight"], ((d,),))]
    else:  # Gemma 1 calls its pre-feedforward norm "post_attention_layernorm".
        rules.append(rule("pre_ffw_norm/scale", ["post_attention_layernorm.weight"], ((d,),)))
    return rules


def hf_rules(config: PaliGemmaConfig) -> list[Rule]:
    """The rename table from transformers' PaliGemmaForConditionalGeneration to our tree."""
    return _vision_rules(config.vision, config.llm.width) + _llm_rules(config.llm)


def canonical_hf_name(name: str) -> str:
    """One spelling for the layouts transformers has used: `language_model.model.*` (save_pretrained),
    `model.language_model.*` (the module tree), and `vision_tower.vision_model.*` (older files)."""
    name = name.removeprefix("model.")
    name = name.replace("language_model.model.", "language_model.", 1)
    return name.replace("vision_tower.vision_model.", "vision_tower.", 1)


@dataclass(frozen=True)
class HfTensor:
    """One tensor of a safetensors directory as its file's header describes it: no data read."""

    file: str
    name: str  # the file's own spelling, which errors and reads use
    shape: tuple[int, ...]


def safetensors_headers(directory: str) -> dict[str, HfTensor]:
    """Every tensor of a (possibly sharded) directory under its canonical name, from the files'
    headers alone. All *.safetensors files are scanned rather than trusting an index json, so a file
    the index forgets cannot go unchecked; a name in two files is refused, as nothing says which wins."""
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors files")
    from safetensors import safe_open

    found: dict[str, HfTensor] = {}
    for file in files:
        with safe_open(file, framework="numpy") as f:
            for name in f.keys():
                key = canonical_hf_name(name)
                if key in found:
                    raise CheckpointError(f"{directory}: tensor {key!r} is in both "
                                          f"{os.path.basename(found[key].file)} and {os.path.basename(file)}")
                found[key] = HfTensor(file, name, tuple(f.get_slice(name).get_shape()))
    return found


def read_safetensors(directory: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a (possibly sharded) directory under their canonical names, and for each
    canonical name the name the file uses (for error messages)."""
    headers = safetensors_headers(directory)
    from safetensors.numpy import load_file

    tensors: dict[str, np.ndarray] = {}
    for file in sorted({h.file for h in headers.values()}):
        for name, value in load_file(file).items():
            tensors[canonical_hf_name(name)] = value
    return tensors, {key: h.name for key, h in headers.items()}


def _ignorable(name: str) -> bool:
    """HF tensors PaliGemma never uses: SigLIP's attention-pooling head (PaliGemma reads the last
    hidden state) and lm_head, tied to the embedding (config_from_hf insists on tying)."""
    return name.startswith("vision_tower.head.") or name == "lm_head.weight"


def _depth(rule: Rule, config: PaliGemmaConfig) -> int:
    """How many layers a per-layer rule stacks: the vision tower's or the language model's."""
    return config.vision.depth if rule.ours.startswith("img/") else config.llm.depth


def check_hf(shapes: dict[str, tuple[int, ...]], config: PaliGemmaConfig, source: str,
             original: dict[str, str] | None = None) -> None:
    """Raises CheckpointError on the first tensor the rename table needs that is missing or of the
    wrong shape (in table order), then on the first unexpected one. Needs only the shapes, so the
    whole-file and the per-host loaders share it and fail with the same message. Errors use the
    file's own names (`original`) where there is one."""
    original = original or {}
    used = set()
    for r in hf_rules(config):
        for i in range(_depth(r, config)) if r.per_layer else [None]:
            for pattern, shape in zip(r.hf, r.shapes):
                name = pattern.format(i=i) if r.per_layer else pattern
                if name not in shapes:
                    raise CheckpointError(f"{source}: missing tensor {name!r} (expected shape {shape}; "
                                          f"'language_model.model.' and 'model.' prefixes are also accepted)")
                if tuple(shapes[name]) != tuple(shape):
                    raise CheckpointError(f"{source}: tensor {original.get(name, name)!r} has shape "
                                          f"{tuple(shapes[name])}, expected {shape}")
                used.add(name)
    for name in sorted(shapes.keys() - used):
        if not _ignorable(name):
            raise CheckpointError(f"{source}: unexpected tensor {original.get(name, name)!r} "
                                  f"with shape {tuple(shapes[name])}")


def convert_hf(tensors: dict[str, np.ndarray], config: PaliGemmaConfig, source: str,
               original: dict[str, str] | None = None) -> Params:
    """Applies the rename table to canonically named tensors, after checking every tensor's presence
    and shape (check_hf)."""
    check_hf({name: tuple(x.shape) for name, x in tensors.items()}, config, source, original)
    flat = {}
    for r in hf_rules(config):
        if r.per_layer:
            flat[r.ours] = np.stack([r.fn(*(tensors[n.format(i=i)] for n in r.hf))
                                     for i in range(_depth(r, config))])
        else:
            flat[r.ours] = r.fn(*(tensors[n] for n in r.hf))
    check_against(flat, config, source)
    return unflatten(flat)


def _read_tensor(tensor: HfTensor, index: tuple | None = None) -> np.ndarray:
    """tensor[index] (all of it without one), a fresh array owning its bytes.

    safe_open maps the file, and each page a read touches stays in this process's RSS until the map
    is dropped; so the file is opened and closed around every read, which keeps a host from growing
    by every tensor it has passed through. The open costs one parse of the file's header.
    """
    from safetensors import safe_open

    with safe_open(tensor.file, framework="numpy") as f:
        return f.get_tensor(tensor.name) if index is None else f.get_slice(tensor.name)[index]


def read_hf_param(rule: Rule, tensors: dict[str, HfTensor], shape: tuple[int, ...], index: tuple,
                  dtype: Any = None) -> np.ndarray:
    """Our parameter `rule.ours` (global `shape`) at `index` (step-1 slices, as
    jax.make_array_from_callback passes), cast to `dtype`, reading only what that slice needs.

    A per-layer rule reads the source tensors of the layers in index[0]'s range one layer at a time,
    converts them, and keeps only index[1:] of each, so the host holds the result plus one layer's
    sources. A tensor stored as we hold it (the embedding, the largest) is read by the slice itself;
    the other single tensors (patch embedding, projector; small) are read whole and converted.
    """
    index = tuple(index) + (slice(None),) * (len(shape) - len(index))
    want = tuple(len(range(*s.indices(n))) for s, n in zip(index, shape))

    def cast(x: np.ndarray) -> np.ndarray:
        return x if dtype is None else x.astype(dtype, copy=False)

    if not rule.per_layer:
        if rule.fn is _identity:
            out = cast(_read_tensor(tensors[rule.hf[0]], index))
        else:
            out = cast(np.asarray(rule.fn(*(_read_tensor(tensors[n]) for n in rule.hf)))[index])
    else:
        out = None
        for j, i in enumerate(range(*index[0].indices(shape[0]))):  # shape[0]: the depth
            layer = np.asarray(rule.fn(*(_read_tensor(tensors[n.format(i=i)]) for n in rule.hf)))[index[1:]]
            if out is None:  # Allocated once the first layer tells the dtype (None: the file's).
                out = np.empty(want, layer.dtype if dtype is None else dtype)
            out[j] = layer
        if out is None:  # An empty layer range: nothing read, so no file dtype to keep.
            out = np.empty(want, np.float32 if dtype is None else dtype)
    if out.shape != want:
        raise CheckpointError(f"{rule.ours}: the rename table gives shape {out.shape} at {index}, expected {want}")
    return out


def _load_hf_sharded(directory: str, config: PaliGemmaConfig, shardings: Any, dtype: Any) -> Params:
    """load_sharded for a Hugging Face directory: load_hf's checks on the headers, then each
    parameter built from the slices this process's devices hold (read_hf_param)."""
    file_config = read_hf_config(directory)
    tensors = safetensors_headers(directory)
    check_hf({key: t.shape for key, t in tensors.items()}, file_config, directory,
             {key: t.name for key, t in tensors.items()})
    file_shapes = flatten(param_shapes(file_config))
    check_against(file_shapes, config, directory)  # The file's config.json must give `config`'s shapes.
    expected = {key: tuple(x.shape) for key, x in file_shapes.items()}
    targets = flatten(shardings)

    def one(rule: Rule) -> jax.Array:
        shape = expected[rule.ours]
        return jax.make_array_from_callback(
            shape, targets[rule.ours], lambda index: read_hf_param(rule, tensors, shape, index, dtype))
    return unflatten({rule.ours: one(rule) for rule in hf_rules(file_config)})


def config_from_hf(hf: dict, source: str) -> PaliGemmaConfig:
    """Our config for a transformers PaliGemma config.json (Gemma 2 or Gemma 1 text model).

    The result keeps the file's semantics, including its sliding window (transformers' Gemma 2 uses
    one; big_vision does not, docs/paligemma2-facts.md §0.7): use .with_llm(sliding_window=None) for
    big_vision behaviour. It takes a family-table name when the architecture matches one.
    """
    v, t = hf["vision_config"], hf["text_config"]

    def need(part: dict, key: str, allowed):
        value = part.get(key, allowed[0])
        if value not in allowed:
            raise CheckpointError(f"{source}/config.json: {key}={value!r} is not supported (expected one of {allowed})")

    need(v, "hidden_act", ["gelu_pytorch_tanh"])
    need(v, "layer_norm_eps", [1e-6])
    need(t, "hidden_activation", ["gelu_pytorch_tanh"])
    need(t, "tie_word_embeddings", [True])
    kind = t.get("model_type", "gemma")
    need(t, "model_type", ["gemma", "gemma2"])
    gemma2 = kind == "gemma2"
    depth = t["num_hidden_layers"]
    window = t.get("sliding_window") if gemma2 else None
    alternating = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(depth)]
    if t.get("layer_types") == ["full_attention"] * depth:
        window = None
    elif window is not None:
        need(t, "layer_types", [alternating])
    rope = (t.get("rope_parameters") or {}).get("rope_theta", t.get("rope_theta", 10_000.0))
    head_dim = t.get("head_dim") or t["hidden_size"] // t["num_attention_heads"]
    vision = VisionConfig(width=v["hidden_size"], depth=v["num_hidden_layers"], mlp_dim=v["intermediate_size"],
                          num_heads=v["num_attention_heads"], patch_size=v["patch_size"],
                          image_size=v["image_size"])
    llm = LLMConfig(
        width=t["hidden_size"], depth=depth, mlp_dim=t["intermediate_size"],
        num_heads=t["num_attention_heads"], num_kv_heads=t["num_key_value_heads"], head_dim=head_dim,
        vocab_size=t["vocab_size"],
        query_pre_attn_scalar=t.get("query_pre_attn_scalar", head_dim) if gemma2 else head_dim,
        attn_logits_softcap=t.get("attn_logit_softcapping") if gemma2 else None,
        final_logits_softcap=t.get("final_logit_softcapping") if gemma2 else None,
        sliding_window=window, post_norms=gemma2, norm_eps=t.get("rms_norm_eps", 1e-6), rope_base=rope)
    for known in CONFIGS.values():
        if known.vision == vision and known.llm == llm:
            return known
    name = os.path.basename(os.path.normpath(source))
    return PaliGemmaConfig(name=f"hf:{name}", family="hf", size=name, resolution=vision.image_size,
                           vision=vision, llm=llm)


def read_hf_config(directory: str) -> PaliGemmaConfig:
    """Our config for the directory's config.json (config_from_hf)."""
    with open(os.path.join(directory, "config.json")) as f:
        return config_from_hf(json.load(f), directory)


def load_hf(directory: str, dtype: Any = None) -> tuple[PaliGemmaConfig, Params]:
    """(config, params) of a Hugging Face directory, every tensor read and converted in this process."""
    config = read_hf_config(directory)
    tensors, original = read_safetensors(directory)
    return config, _cast(convert_hf(tensors, config, directory, original), dtype)


# ----------------------------------------------------------------------------------------------
# Entry points

def load(path: str, config_name: str | PaliGemmaConfig | None = None,
         dtype: Any = None) -> tuple[PaliGemmaConfig, Params]:
    """(config, params) from a big_vision `.npz` or a Hugging Face directory (config.json +
    *.safetensors). For an .npz the config is `config_name` (a family-table name or a config) or is
    inferred from the shapes; an HF directory carries its own config. Arrays keep the file's dtype
    (bfloat16 for released checkpoints) unless `dtype` is given."""
    if os.path.isdir(path):
        if config_name is not None:
            raise ValueError(f"{path}: an HF directory carries its own config.json; do not pass config_name")
        return load_hf(path, dtype)
    if path.endswith(".npz"):
        return load_npz(path, config_name, dtype)
    raise ValueError(f"{path}: expected a big_vision .npz file or a Hugging Face checkpoint directory")


def save_orbax(directory: str, params: Params) -> None:
    """Saves (fine-tuned) params with orbax; `directory` must not exist yet."""
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(directory), params)
    checkpointer.wait_until_finished()


def restore_orbax(directory: str, like: Params | None = None) -> Params:
    """Restores params saved by save_orbax. With `like` (arrays or ShapeDtypeStructs) the result has
    its structure and dtypes; without, it is what was saved."""
    import orbax.checkpoint as ocp

    target = None if like is None else jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), like)
    return ocp.StandardCheckpointer().restore(os.path.abspath(directory), target)
