"""Staged nano pretraining: each stage continues the previous one at its resolution, writes a loadable
big_vision .npz, and a rerun keeps finished stages instead of redoing them."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.pretrain.stages import load_spec, pretrain
from model import checkpoint
from model.config import config_for

ROOT = Path(__file__).resolve().parents[1]


def tiny_spec(tmp_path: Path) -> Path:
    spec = {
        "sizes": ["nano-s"],
        "tokenizer": str(ROOT / "model/assets/nano_tokenizer.model"),
        "out": str(tmp_path / "ckpt"),
        "data": {"root": str(tmp_path / "data"), "num_train": 4, "seed": 7},
        "optimizer": {"lr": 1e-3, "batch_size": 2, "weight_decay": 0.0},
        "stages": [
            {"name": "s1", "resolution": 32, "steps": 2, "text_len": 32, "weights": {"all": 1.0}},
            {"name": "s2", "resolution": 64, "steps": 2, "text_len": 32,
             "weights": {"all": 0.0, "docvqa": 1.0}},
        ],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_stages_resume_and_continue(tmp_path):
    path = tiny_spec(tmp_path)
    spec = load_spec(path)
    assert spec.stages[1].weight("docvqa") == 1.0 and spec.stages[1].weight("vqav2") == 0.0

    first = pretrain(path, max_resolution=32, progress=False)
    assert [p.name for p in first] == ["nano-s-32.npz"]
    stamp = first[0].stat().st_mtime_ns

    both = pretrain(path, progress=False)
    assert [p.name for p in both] == ["nano-s-32.npz", "nano-s-64.npz"]
    assert first[0].stat().st_mtime_ns == stamp, "a finished stage was redone"
    assert not (spec.out / ".work").exists() or not any((spec.out / ".work").iterdir())

    _, p32 = checkpoint.load_npz(str(both[0]), config_for("nano-s", 32))
    _, p64 = checkpoint.load_npz(str(both[1]), config_for("nano-s", 64))
    assert p64["img"]["pos_embedding"].shape[1] == 4 * p32["img"]["pos_embedding"].shape[1]
    # Stage 2 started from stage 1 and trained: the LLM moved, but not far from where stage 1 left it.
    emb32, emb64 = (np.asarray(p["llm"]["embedder"]["input_embedding"]) for p in (p32, p64))
    assert not np.array_equal(emb32, emb64)
    assert np.abs(emb64 - emb32).max() < 0.1


def test_ocr_mixture_reads_each_text_tasks_ocr_view(tmp_path):
    """`ocr` is opt-in per stage (never covered by `all`); its sources are the OCR views of the tasks whose
    images hold text, each the image with its words as the target, sharing the weight equally."""
    from harness.pretrain.stages import pretraining_sources

    path = tiny_spec(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["stages"][1]["weights"] = {"ocr": 3.0}
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec(path)
    assert spec.stages[0].weight("ocr") == 0.0 and spec.stages[1].weight("ocr") == 3.0
    sources = pretraining_sources(spec, spec.stages[1])
    assert len(sources) == 3 and all(s.weight == 1.0 for s in sources)
    assert sorted(s.square_pad for s in sources) == [False, False, True]  # PubTabNet pads like its task
    for source in sources:
        ex = source.examples[0]
        assert ex.prefix == "ocr" and len(ex.targets) == 1 and ex.targets[0].strip()
        assert ex.image.ndim == 3 and "<loc" not in ex.targets[0] and "<td" not in ex.targets[0]


@pytest.mark.slow
def test_two_stages_at_one_resolution(tmp_path):
    """A stage followed by another at its resolution writes {size}-{px}-{name}.npz; the last one writes the
    resolution's checkpoint from it; once that exists the earlier stage is not needed, even if its own file
    is gone (a rebuild that starts from a shipped checkpoint copies it under the earlier stage's name)."""
    path = tiny_spec(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["stages"].insert(1, {"name": "s1b", "resolution": 32, "steps": 2, "text_len": 32, "freeze": ["img_tower"],
                             "weights": {"all": 0.0, "mimic_cxr": 1.0}})
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec(path)

    written = pretrain(path, max_resolution=32, progress=False)
    assert [p.name for p in written] == ["nano-s-32-s1.npz", "nano-s-32.npz"]
    config = config_for("nano-s", 32)
    (_, first), (_, second) = (checkpoint.load_npz(str(p), config) for p in written)
    np.testing.assert_array_equal(first["img"]["pos_embedding"], second["img"]["pos_embedding"])  # tower frozen
    assert not np.array_equal(first["llm"]["embedder"]["input_embedding"],
                              second["llm"]["embedder"]["input_embedding"])

    written[0].unlink()
    stamp = written[1].stat().st_mtime_ns
    both = pretrain(path, progress=False)
    assert [p.name for p in both] == ["nano-s-32.npz", "nano-s-64.npz"]
    assert written[1].stat().st_mtime_ns == stamp and not written[0].exists(), "a finished stage was redone"
    assert not any((spec.out / ".work").iterdir())


def test_a_stage_may_train_the_tower_at_a_fraction_of_the_lr(tmp_path):
    """`img_tower_lr_mult:` reaches the stage; a value outside (0, 1], or one on a stage that freezes the
    tower, is a one-line error naming the file and the field."""
    import pytest

    path = tiny_spec(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["stages"][1]["img_tower_lr_mult"] = 0.1
    path.write_text(yaml.safe_dump(spec))
    assert [s.img_tower_lr_mult for s in load_spec(path).stages] == [1.0, 0.1]
    for bad in ({"img_tower_lr_mult": 0.0}, {"img_tower_lr_mult": 0.1, "freeze": ["img_tower"]}):
        spec["stages"][1] = {**spec["stages"][1], **bad}
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(ValueError, match=r"spec\.yaml: stages\[1\]\.img_tower_lr_mult: expected a number in "
                                             r"\(0, 1\] on a stage that trains the tower"):
            load_spec(path)


@pytest.mark.slow
def test_a_stage_may_branch_from_an_earlier_one_and_keep_its_seed(tmp_path):
    """`from:` continues an earlier stage instead of the one before it, and `seed:` keeps a moved stage's
    seed: a 32 px stage placed after a 64 px one, `from` stage 1 with the seed of its old index, writes the
    same bytes as in the linear config it came from. Once every resolution's checkpoint exists, nothing
    trains (the trunk's files may be missing)."""
    for name in ("linear", "branch"):
        (tmp_path / name).mkdir()
    linear = tiny_spec(tmp_path / "linear")
    raw = yaml.safe_load(linear.read_text())
    data = raw["data"]  # both configs read the same generated data
    s1, s2 = raw["stages"]
    s1b = {"name": "s1b", "resolution": 32, "steps": 2, "text_len": 32, "freeze": ["img_tower"],
           "weights": {"all": 0.0, "mimic_cxr": 1.0}}
    raw["stages"] = [s1, s1b]
    linear.write_text(yaml.safe_dump(raw))
    reference = pretrain(linear, progress=False)[-1]

    branch = tiny_spec(tmp_path / "branch")
    raw = yaml.safe_load(branch.read_text())
    raw["stages"], raw["data"] = [s1, s2, {**s1b, "from": "s1", "seed": 1}], data
    branch.write_text(yaml.safe_dump(raw))
    written = pretrain(branch, progress=False)
    assert [p.name for p in written] == ["nano-s-32-s1.npz", "nano-s-32.npz", "nano-s-64.npz"]
    assert written[1].read_bytes() == reference.read_bytes()

    (_, p1), (_, p2) = (checkpoint.load_npz(str(written[i]), config_for("nano-s", r)) for i, r in ((0, 32), (2, 64)))
    emb1, emb2 = (np.asarray(p["llm"]["embedder"]["input_embedding"]) for p in (p1, p2))
    assert not np.array_equal(emb1, emb2) and np.abs(emb2 - emb1).max() < 0.1  # s2 continued s1, trained

    written[0].unlink()
    stamps = [p.stat().st_mtime_ns for p in written[1:]]
    assert [p.name for p in pretrain(branch, progress=False)] == ["nano-s-32.npz", "nano-s-64.npz"]
    assert [p.stat().st_mtime_ns for p in written[1:]] == stamps and not written[0].exists()


def test_a_bad_from_or_a_repeated_name_is_a_one_line_error(tmp_path):
    import pytest

    path = tiny_spec(tmp_path)
    raw = yaml.safe_load(path.read_text())
    for stages, match in (
            ([raw["stages"][0], {**raw["stages"][1], "from": "s2"}], r"stages\[1\]\.from: expected the name of an "
                                                                    r"earlier VLM stage \(s1\), got 's2'"),
            ([{**raw["stages"][0], "from": "s1"}, raw["stages"][1]], r"stages\[0\]\.from: .*\(none\), got 's1'"),
            ([raw["stages"][0], {**raw["stages"][1], "name": "s1"}], r"stages\[1\]\.name: expected a name no "
                                                                    r"other stage has, got 's1'")):
        path.write_text(yaml.safe_dump({**raw, "stages": stages}))
        with pytest.raises(ValueError, match=r"spec\.yaml: " + match):
            load_spec(path)


def test_the_pretrain_config_writes_exactly_the_shipped_family(monkeypatch):
    """configs/pretrain/nano.yaml is the one pretraining config: the file each size's last stage at each
    resolution writes, and stage 0's encoder, are the files shipped in checkpoints/nano/ (so a bare
    `paligemma-transfer pretrain` on a fresh clone finds them all and trains nothing), and the stages chain
    as its header says: 64 px 2b -> 2c (-> 2d for nano-m) -> 2e; 32 px for nano-m 1b -> 1c -> 1d."""
    from harness.pretrain.stages import stage_outputs, stage_seed, stage_sources

    configs = sorted((ROOT / "configs/pretrain").glob("*.yaml"))
    assert [p.name for p in configs] == ["nano.yaml"]
    spec = load_spec(configs[0])
    assert spec.out == ROOT / "checkpoints/nano" and spec.sizes == ("nano-s", "nano-m")
    finals = {p.name for size in spec.sizes for p in stage_outputs(spec, size).values()
              if p.stem.count("-") == 2}
    encoder = {f"encoder-{s.resolution}.npz" for s in spec.stages if s.kind == "encoder"}
    assert finals | encoder == {p.name for p in (ROOT / "checkpoints/nano").glob("*.npz")}
    import harness.pretrain.stages as stages

    def no_training(*args, **kwargs):
        raise AssertionError("a stage trained although its shipped file exists")

    monkeypatch.setattr(stages, "train", no_training)
    assert {p.name for p in pretrain(configs[0], progress=False)} == finals  # the shipped files, loaded

    names = {s.name: i for i, s in enumerate(spec.stages)}
    s, m = stage_sources(spec, "nano-s"), stage_sources(spec, "nano-m")
    assert s[names["stage2c-reread64"]] == names["stage2b-mimic64"]
    assert s[names["stage2e-tables64"]] == names["stage2c-reread64"]
    assert m[names["stage2e-tables64"]] == names["stage2d-mimic64"] and names["stage2d-mimic64"] not in s
    assert m[names["stage1d-tables"]] == names["stage1c-mimic"] and names["stage1d-tables"] not in s
    assert s[names["stage1b-mimic"]] == names["stage1"] and stage_seed(spec.stages[names["stage1b-mimic"]], 4) == 2
    outputs = {spec.stages[i].name: p.name for i, p in stage_outputs(spec, "nano-s").items()}
    assert (outputs["stage1b-mimic"], outputs["stage2e-tables64"]) == ("nano-s-32.npz", "nano-s-64.npz")
    outputs = {spec.stages[i].name: p.name for i, p in stage_outputs(spec, "nano-m").items()}
    assert (outputs["stage1d-tables"], outputs["stage2e-tables64"]) == ("nano-m-32.npz", "nano-m-64.npz")


def test_a_stage_may_run_for_some_sizes_only(tmp_path):
    """`sizes:` on a stage: for the other sizes it is out of the chain and out of the file names, and the
    indices (the default seeds) of the stages after it do not move."""
    import pytest

    from harness.pretrain.stages import stage_outputs, stage_sources

    path = tiny_spec(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["sizes"] = ["nano-s", "nano-m"]
    s1, s2 = raw["stages"]
    raw["stages"] = [s1, {**s1, "name": "s1c", "sizes": ["nano-m"]}, s2]
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec(path)
    assert stage_sources(spec, "nano-m") == {0: None, 1: 0, 2: 1}
    assert stage_sources(spec, "nano-s") == {0: None, 2: 0}
    assert {i: p.name for i, p in stage_outputs(spec, "nano-m").items()} == \
        {0: "nano-m-32-s1.npz", 1: "nano-m-32.npz", 2: "nano-m-64.npz"}
    assert {i: p.name for i, p in stage_outputs(spec, "nano-s").items()} == {0: "nano-s-32.npz", 2: "nano-s-64.npz"}
    assert [p.name for p in pretrain(path, sizes=("nano-s",), max_resolution=32, progress=False)] == ["nano-s-32.npz"]

    for stages, match in (
            ([s1, {**s1, "name": "s1c", "sizes": ["nano-l"]}], r"stages\[1\]\.sizes: expected a list of the "
                                                             r"config's sizes \['nano-s', 'nano-m'\]"),
            ([{**s1, "sizes": ["nano-m"]}, {**s2, "from": "s1"}], r"stages\[1\]\.from: 's1' runs for \['nano-m'\] "
                                                                 r"only, expected it to run for every size")):
        path.write_text(yaml.safe_dump({**raw, "stages": stages}))
        with pytest.raises(ValueError, match=r"spec\.yaml: " + match):
            load_spec(path)
