"""Base checkpoints read per host: checkpoint.load_sharded places each parameter by the partition rules,
reading only the slices each device holds, and must equal the plain load placed the same way. The
Hugging Face directories here are written by transformers itself (save_pretrained), so the layout
they check against is not this project's idea of it."""

from __future__ import annotations

import json
import shutil
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model import checkpoint
from tests.helpers.fake_devices import run_on_fake_devices


def test_members_are_found_in_place_and_read_by_slices(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"a": rng.normal(size=(7, 5, 6)).astype(np.float32), "s": np.float32(3.5),
              "b": rng.normal(size=(4, 3)).astype(np.float32).astype(checkpoint.ml_dtypes.bfloat16)}
    path = str(tmp_path / "x.npz")
    np.savez(path, **arrays)
    members = checkpoint.npz_members(path)
    assert {k: m.shape for k, m in members.items()} == {"a": (7, 5, 6), "s": (), "b": (4, 3)}
    index = (slice(1, 6), slice(None), slice(2, 4))
    for chunk in (1, 13 * 4, 64 << 20):  # one row per chunk, a partial row count, everything at once
        np.testing.assert_array_equal(checkpoint.read_member(members["a"], index, chunk_bytes=chunk),
                                      arrays["a"][index])
    assert checkpoint.read_member(members["s"]) == 3.5
    got = checkpoint.read_member(members["b"], (slice(2, 4),), np.float32)
    np.testing.assert_array_equal(got, arrays["b"][2:4].astype(np.float32))
    packed = str(tmp_path / "z.npz")
    np.savez_compressed(packed, **arrays)
    with pytest.raises(checkpoint.CheckpointError, match=r"z.npz: member 'a.npy' is compressed"):
        checkpoint.npz_members(packed)
    assert zipfile.is_zipfile(path)


# The tail of the scripts below: `path` loaded by load_sharded on the meshes 8x1 and 4x2 of 8 fake
# devices, against `plain` (the whole-file load, float32) placed by the same shardings.
COMPARE = textwrap.dedent("""
    out = {"devices": jax.device_count()}
    for name, mp in (("8x1", 1), ("4x2", 2)):
        shardings = param_shardings(param_shapes(config), make_mesh(mp))
        got = checkpoint.load_sharded(path, config, shardings)
        want = place(plain, shardings)
        same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))) and a.dtype == b.dtype
                            and a.sharding == b.sharding, got, want)
        out[name] = all(jax.tree.leaves(same))
        out[name + "/split"] = sum(1 for x in jax.tree.leaves(got) if not x.sharding.is_fully_replicated)
    print(json.dumps(out))
""")

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np, ml_dtypes
    from model import checkpoint
    from model.config import get_config
    from model.paligemma import init_params, param_shapes
    from model.sharding import make_mesh, param_shardings, place

    config = get_config("nano-s-32")
    params = jax.tree.map(np.asarray, init_params(config, jax.random.key(0)))
    # Released checkpoints are bfloat16: store half the tree so, the rest float32.
    flat = checkpoint.flatten(params)
    flat = {k: (v.astype(ml_dtypes.bfloat16) if i % 2 else v) for i, (k, v) in enumerate(sorted(flat.items()))}
    path = sys.argv[1]
    checkpoint.save_npz(path, checkpoint.unflatten(flat))
    _, plain = checkpoint.load(path, config_name=config.name, dtype=np.float32)
""") + COMPARE


def test_sharded_load_equals_the_plain_load_on_eight_devices(tmp_path):
    script = SCRIPT.replace("sys.argv[1]", repr(str(tmp_path / "base.npz")))
    out = run_on_fake_devices(script, 8, timeout=600)
    assert out["devices"] == 8 and out["8x1"] and out["4x2"], out
    assert out["8x1/split"] > 10 and out["4x2/split"] > 10




# ----------------------------------------------------------------------------------------------
# Hugging Face directories

@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """model.testing.tiny_config as transformers saves it: bfloat16 tensors, split by save_pretrained
    over two safetensors files and the index json naming each tensor's file."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from model.testing import random_hf_model, tiny_config

    model = random_hf_model(tiny_config()).to(torch.bfloat16)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    path = tmp_path_factory.mktemp("hf")
    model.save_pretrained(path, max_shard_size=size * 6 // 10)
    assert len(list(path.glob("*.safetensors"))) == 2, sorted(path.iterdir())
    assert (path / "model.safetensors.index.json").exists()
    return path


HF_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np, ml_dtypes
    from model import checkpoint
    from model.paligemma import param_shapes
    from model.sharding import make_mesh, param_shardings, place

    path = sys.argv[1]
    config, stored = checkpoint.load_hf(path)
    assert {x.dtype for x in jax.tree.leaves(stored)} == {np.dtype(ml_dtypes.bfloat16)}
    _, plain = checkpoint.load_hf(path, np.float32)
""") + COMPARE


def test_sharded_hf_load_equals_the_plain_load_on_eight_devices(hf_dir):
    out = run_on_fake_devices(HF_SCRIPT.replace("sys.argv[1]", repr(str(hf_dir))), 8, timeout=600)
    assert out["devices"] == 8 and out["8x1"] and out["4x2"], out
    assert out["8x1/split"] > 10 and out["4x2/split"] > 10


def test_hf_params_read_only_the_layers_and_slices_asked_for(hf_dir, monkeypatch):
    """read_hf_param reads a per-layer parameter's layers in index[0]'s range and nothing else, and the
    embedding by the slice itself; both equal the same slice of the whole conversion."""
    from model.paligemma import param_shapes

    config, whole = checkpoint.load_hf(str(hf_dir), np.float32)
    tensors = checkpoint.safetensors_headers(str(hf_dir))
    rules = {r.ours: r for r in checkpoint.hf_rules(config)}
    shapes = {k: tuple(v.shape) for k, v in checkpoint.flatten(param_shapes(config)).items()}
    reads = []
    read = checkpoint._read_tensor
    monkeypatch.setattr(checkpoint, "_read_tensor", lambda t, index=None: reads.append((t.name, index))
                        or read(t, index))
    flat = checkpoint.flatten(whole)

    key = "llm/layers/mlp/gating_einsum"  # (depth, 2, width, mlp): gate and up of each layer
    index = (slice(1, 3), slice(1, 2), slice(16, 48), slice(None))
    got = checkpoint.read_hf_param(rules[key], tensors, shapes[key], index, np.float32)
    np.testing.assert_array_equal(got, flat[key][index])
    assert got.dtype == np.float32
    assert sorted(name for name, _ in reads) == sorted(
        f"language_model.model.layers.{i}.mlp.{p}_proj.weight" for i in (1, 2) for p in ("gate", "up"))

    reads.clear()
    key = "llm/embedder/input_embedding"
    index = (slice(75, 150), slice(32, 64))
    got = checkpoint.read_hf_param(rules[key], tensors, shapes[key], index, np.float32)
    np.testing.assert_array_equal(got, flat[key][index])
    assert reads == [("language_model.model.embed_tokens.weight", index)]


def _edited_copy(src: Path, dst: Path, name: str, edit) -> str:
    """A copy of the directory `src` whose tensor `name` (the file's spelling) went through `edit`
    (a function of the file's {name: array} dict), in the file transformers' index put it in."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    file = dst / json.loads((src / "model.safetensors.index.json").read_text())["weight_map"][name]
    tensors = load_file(str(file))
    edit(tensors)
    save_file(tensors, str(file))
    return str(dst)


K_PROJ = "language_model.model.layers.1.self_attn.k_proj.weight"
FC1 = "vision_tower.encoder.layers.0.mlp.fc1.weight"


@pytest.mark.parametrize("name, edit, message", [
    (K_PROJ, lambda t: t.pop(K_PROJ),
     r"missing tensor 'language_model.layers.1.self_attn.k_proj.weight' \(expected shape \(48, 64\);"),
    (FC1, lambda t: t.update({FC1: np.zeros((64, 31), np.float32)}),
     rf"tensor '{FC1}' has shape \(64, 31\), expected \(64, 32\)$"),
    (FC1, lambda t: t.update({"language_model.model.extra.bias": np.zeros(3, np.float32)}),
     r"unexpected tensor 'language_model.model.extra.bias' with shape \(3,\)$"),
], ids=["missing", "misshaped", "unexpected"])
def test_a_bad_hf_directory_fails_the_sharded_load_as_the_whole_one(hf_dir, tmp_path, name, edit, message):
    """The checks run on the headers before any array is built, and say what load_hf says."""
    from model.paligemma import param_shapes
    from model.sharding import make_mesh, param_shardings
    from model.testing import tiny_config

    path = _edited_copy(hf_dir, tmp_path / "d", name, edit)
    config = tiny_config()
    shardings = param_shardings(param_shapes(config), make_mesh(1))
    with pytest.raises(checkpoint.CheckpointError, match=message) as whole:
        checkpoint.load(path)
    with pytest.raises(checkpoint.CheckpointError, match=message) as sharded:
        checkpoint.load_sharded(path, config, shardings)
    assert str(sharded.value) == str(whole.value) and "\n" not in str(sharded.value)


def test_a_tensor_in_two_files_is_refused(hf_dir, tmp_path):
    """Nothing says which copy wins, so both loaders name the tensor and the two files."""
    from safetensors.numpy import load_file

    from model.paligemma import param_shapes
    from model.sharding import make_mesh, param_shardings
    from model.testing import tiny_config

    weight_map = json.loads((hf_dir / "model.safetensors.index.json").read_text())["weight_map"]
    other = next(f for f in sorted(set(weight_map.values())) if f != weight_map[K_PROJ])
    source = load_file(str(hf_dir / weight_map[K_PROJ]))
    path = _edited_copy(hf_dir, tmp_path / "d", next(n for n, f in weight_map.items() if f == other),
                        lambda t: t.update({K_PROJ: source[K_PROJ]}))
    message = (r"tensor 'language_model.layers.1.self_attn.k_proj.weight' is in both "
               r"model-0000\d-of-00002.safetensors and model-0000\d-of-00002.safetensors$")
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load(path)
    config = tiny_config()
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load_sharded(path, config, param_shardings(param_shapes(config), make_mesh(1)))


def test_an_hf_directory_of_another_config_is_refused(hf_dir):
    """The directory's config.json (3 language-model layers) against a 2-layer config."""
    from model.paligemma import param_shapes
    from model.sharding import make_mesh, param_shardings
    from model.testing import tiny_config

    config = tiny_config(depth=2)
    shardings = param_shardings(param_shapes(config), make_mesh(1))
    message = r"parameter 'llm/layers/attn/attn_vec_einsum/w' has shape \(3, 4, 24, 64\), expected \(2, 4, 24, 64\)"
    with pytest.raises(checkpoint.CheckpointError, match=message + " for config 'tiny'"):
        checkpoint.load_sharded(str(hf_dir), config, shardings)


@pytest.mark.slow
@pytest.mark.parametrize("fmt, bound", [("npz", 0.7), ("hf", 0.6)])
def test_two_hosts_each_hold_about_half_of_what_one_whole_load_holds(fmt, bound):
    """bench/checkpoint_rss.py at ~230 MB: each of 2 processes loading its half onto a (2, 1) mesh grows
    by about half of what one process loading the whole checkpoint grows by (1 GB measured: npz 0.48, HF
    directory 0.28: its whole load also holds the stacked and the cast copies)."""
    from bench.checkpoint_rss import measure

    out = measure(230, fmt, timeout=600)
    assert out["growth_ratio"] < bound, out
    assert out["peak_ratio"] < 1.0, out
