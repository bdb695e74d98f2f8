"""Pretrain the nano family with the project's own trainer, in stages like PaliGemma 2's.

PaliGemma 2 (docs/paligemma2-facts.md §1.4): stage 1 trains at 224 px on a broad multitask mixture; stage 2
continues at 448 and then 896 px with the resolution-hungry tasks upweighted and longer text. Here: stage 1
at the family's lowest resolution on a mixture of all seven tasks' formats (captioning, OCR / document VQA,
VQA, text detection with loc tokens, table and molecule transcription, reports), then stage 2 continues at
each higher resolution, upweighting the text-heavy tasks. The data comes from the tasks' own demo
generators run with a different seed than any demo grid (`configs/pretrain/nano.yaml`), so fine-tuning
never sees its eval images here. Soft-caps stay on during pretraining, as in the paper's stages 1-2.

Each stage's result is the base checkpoint for that (size, resolution): `{out}/{size}-{res}.npz`,
in bfloat16 like the released `.b16.npz` files. A stage continues the one before it, or the earlier stage
its `from:` names, so one config may hold two recipes on a shared trunk (configs/pretrain/nano.yaml).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml

from harness.cell.data import Source, mixture_batches
from harness.cell.train import TrainConfig, train
from harness.pretrain.encoder import load_encoder, save_bf16, save_encoder, train_encoder, with_encoder
from model import checkpoint
from model.config import config_for
from model.paligemma import init_params
from model.posemb import resample_posemb
from model.tokenizer import Tokenizer
from tasks.base import Task
from tasks.registry import get_task

ALL = "all"
# The tasks the nano family is pretrained for: the demo grids' seven (the text-spotting sources registered
# beside ICDAR'15 are data for its mixture, not tasks of the demo; the shipped checkpoints never saw them).
PRETRAIN_TASKS = ("chemdraw", "coco_captions", "docvqa", "icdar15", "mimic_cxr", "pubtabnet", "vqav2")
OCR = "ocr"  # the weight key of the OCR mixture: every task's `ocr_examples`, shared equally


ENCODER = "encoder"  # a stage of this kind trains the image encoder alone (harness/pretrain/encoder.py)
KINDS = ("vlm", ENCODER)
FREEZABLE = ("img_tower", "img", "llm")  # what a stage's `freeze:` may name (TrainConfig's flags)


@dataclass(frozen=True)
class Stage:
    name: str
    resolution: int
    steps: int
    text_len: int
    weights: Mapping[str, float]
    kind: str = "vlm"
    # This stage's own (larger) generated data, per task ({task: n, all: n}); None: the spec's.
    num_train: Mapping[str, int] | None = None
    batch_size: int | None = None  # None: the optimizer's
    # What this stage does not train: "img_tower" (the image encoder, not its projector), "img", "llm".
    freeze: tuple[str, ...] = ()
    img_tower_lr_mult: float = 1.0  # the image tower's lr as a fraction of the stage's (TrainConfig's)
    # The earlier VLM stage whose output this one continues (None: the VLM stage before it). A branch lets
    # one config hold two recipes that share a trunk, e.g. a 32 px stage continuing stage 1 after the 64 px
    # stages that also continue it.
    start: str | None = None
    # The stage's training and data-order seed (None: its index). Set so that a stage moved in a new config
    # reproduces the checkpoint an older config's stage at another index wrote.
    seed: int | None = None
    # The sizes this stage runs for (None: every size). A stage skipped for a size is left out of its
    # chain: the stage after it continues the one before it, and the outputs are named without it.
    sizes: tuple[str, ...] | None = None

    def runs_for(self, size: str) -> bool:
        return self.sizes is None or size in self.sizes

    def train_size(self, task: str, default: int) -> int | None:
        """How many training examples to generate for `task` in this stage (None: the spec's data)."""
        if self.num_train is None:
            return None
        return int(self.num_train.get(task, self.num_train.get(ALL, default)))

    def weight(self, task: str) -> float:
        """A task's weight; `ocr` is never covered by `all` (a stage opts into the OCR mixture)."""
        if task == OCR:
            return float(self.weights.get(OCR, 0.0))
        return float(self.weights.get(task, self.weights.get(ALL, 0.0)))


@dataclass(frozen=True)
class PretrainSpec:
    sizes: tuple[str, ...]
    stages: tuple[Stage, ...]
    tokenizer: Path
    data_root: Path
    num_train: int
    data_seed: int
    lr: float
    batch_size: int
    weight_decay: float
    out: Path


def _num_train(value: Any) -> Mapping[str, int] | None:
    """A stage's `num_train`: an int for every task, or {task: n, all: n}."""
    if value is None:
        return None
    return {ALL: int(value)} if isinstance(value, int) else {str(k): int(v) for k, v in dict(value).items()}


def freeze_flags(freeze: tuple[str, ...] | list[str]) -> dict[str, bool]:
    """A stage's `freeze:` list as TrainConfig's flags."""
    return {"freeze_img": "img" in freeze, "freeze_img_tower": "img_tower" in freeze, "freeze_llm": "llm" in freeze}


def trains_tower(freeze: tuple[str, ...] | list[str]) -> bool:
    """Whether a `freeze:` list leaves the image tower training (what `img_tower_lr_mult` scales)."""
    return not {"img", "img_tower"} & set(freeze)


def load_spec(path: str | Path) -> PretrainSpec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ValueError(f"{path}{where}: malformed YAML: {getattr(e, 'problem', e)}") from None
    root = path.resolve().parent.parent.parent  # configs/pretrain/x.yaml -> repo root
    try:
        stages = tuple(Stage(name=s["name"], resolution=int(s["resolution"]), steps=int(s["steps"]),
                             text_len=int(s["text_len"]), weights=dict(s["weights"]),
                             kind=str(s.get("kind", "vlm")),
                             num_train=_num_train(s.get("num_train")),
                             batch_size=int(s["batch_size"]) if "batch_size" in s else None,
                             freeze=tuple(s.get("freeze", ())),
                             img_tower_lr_mult=float(s.get("img_tower_lr_mult", 1.0)),
                             start=str(s["from"]) if "from" in s else None,
                             seed=int(s["seed"]) if "seed" in s else None,
                             sizes=tuple(map(str, s["sizes"])) if "sizes" in s else None)
                       for s in raw["stages"])
        names = [s.name for s in stages]
        for i, stage in enumerate(stages):
            if stage.kind not in KINDS:
                raise ValueError(f"{path}: stages[{i}].kind: expected one of {KINDS}, got {stage.kind!r}")
            if not set(stage.freeze) <= set(FREEZABLE):
                raise ValueError(f"{path}: stages[{i}].freeze: expected a list of {' / '.join(map(repr, FREEZABLE))}, "
                                 f"got {list(stage.freeze)}")
            if not 0.0 < stage.img_tower_lr_mult <= 1.0 or (stage.img_tower_lr_mult != 1.0
                                                             and not trains_tower(stage.freeze)):
                raise ValueError(f"{path}: stages[{i}].img_tower_lr_mult: expected a number in (0, 1] on a stage "
                                 f"that trains the tower, got {stage.img_tower_lr_mult} with freeze "
                                 f"{list(stage.freeze)}")
            if stage.kind == ENCODER and any(s.kind == ENCODER for s in stages[i + 1:]):
                raise ValueError(f"{path}: stages[{i}]: expected at most one stage of kind {ENCODER!r}")
            if stage.name in names[:i]:
                raise ValueError(f"{path}: stages[{i}].name: expected a name no other stage has, got {stage.name!r}")
            earlier = [s.name for s in stages[:i] if s.kind != ENCODER]
            if stage.start is not None and (stage.kind == ENCODER or stage.start not in earlier):
                raise ValueError(f"{path}: stages[{i}].from: expected the name of an earlier VLM stage "
                                 f"({', '.join(earlier) or 'none'}), got {stage.start!r}")
            if stage.sizes is not None and (stage.kind == ENCODER or not set(stage.sizes) <= set(raw["sizes"])):
                raise ValueError(f"{path}: stages[{i}].sizes: expected a list of the config's sizes "
                                 f"{list(raw['sizes'])} on a VLM stage, got {list(stage.sizes)}")
            start = next((s for s in stages if s.name == stage.start), None)
            runs_for = set(stage.sizes or raw["sizes"])
            if start is not None and start.sizes is not None and not runs_for <= set(start.sizes):
                raise ValueError(f"{path}: stages[{i}].from: {start.name!r} runs for {list(start.sizes)} only, "
                                 f"expected it to run for every size this stage does")
        return PretrainSpec(
            sizes=tuple(raw["sizes"]), stages=stages, tokenizer=root / raw["tokenizer"],
            data_root=root / raw["data"]["root"], num_train=int(raw["data"]["num_train"]),
            data_seed=int(raw["data"]["seed"]), lr=float(raw["optimizer"]["lr"]),
            batch_size=int(raw["optimizer"]["batch_size"]),
            weight_decay=float(raw["optimizer"].get("weight_decay", 0.0)), out=root / raw["out"])
    except KeyError as e:
        raise ValueError(f"{path}: missing field {e.args[0]!r}") from None


def pretraining_sources(spec: PretrainSpec, stage: Stage) -> list[Source]:
    """Each of PRETRAIN_TASKS' generated train split, weighted as the stage says; with an `ocr` weight, also
    the OCR view of every task that has one (`Task.ocr_examples`: the image's text as the target),
    the weight split equally between those tasks."""
    sources, ocr = [], []
    for name in PRETRAIN_TASKS:
        weight = stage.weight(name)
        task = get_task(name)
        has_ocr = type(task).ocr_examples is not Task.ocr_examples  # the tasks whose images hold text
        if weight <= 0 and not (stage.weight(OCR) > 0 and has_ocr):
            continue
        size = stage.train_size(name, spec.num_train)
        manual = spec.data_root / name if size is None else spec.data_root / f"n{size}" / name
        if not manual.is_dir() or not any(manual.iterdir()):
            task.write_demo(manual, num_train=size or spec.num_train, num_eval=8, seed=spec.data_seed)
        pad = task.recipe("3b", 224).pad_to_square
        if weight > 0:
            sources.append(Source(task.examples(manual, "train"), weight=weight, square_pad=pad))
        if stage.weight(OCR) > 0:
            examples = task.ocr_examples(manual, "train")
            if len(examples):
                ocr.append(Source(examples, weight=1.0, square_pad=pad))
    for source in ocr:
        sources.append(dataclasses.replace(source, weight=stage.weight(OCR) / len(ocr)))
    return sources


def pretrain_encoder_stage(spec: PretrainSpec, stage: Stage, index: int, tokenizer: Tokenizer, size: str, *,
                           progress: bool = True) -> Path:
    """Stage 0: the image encoder alone (harness/pretrain/encoder.py), shared by every size, written once
    to {out}/encoder-{resolution}.npz and kept (resumable under {out}/.work like the VLM stages)."""
    out = spec.out / f"encoder-{stage.resolution}.npz"
    if out.exists():
        print(f"{stage.name} @{stage.resolution}px: {out} exists, kept (delete it to redo)")
        return out
    config = config_for(size, stage.resolution)
    batch_size, seed = stage.batch_size or spec.batch_size, stage_seed(stage, index)
    batches = mixture_batches(pretraining_sources(spec, stage), tokenizer, text_len=stage.text_len,
                              resolution=stage.resolution, batch_size=batch_size,
                              num_steps=stage.steps, seed=spec.data_seed + seed)
    cfg = TrainConfig(lr=spec.lr, num_steps=stage.steps, weight_decay=spec.weight_decay, seed=seed,
                      checkpoint_every=100)
    workdir = spec.out / ".work" / f"encoder-{stage.resolution}"
    img, summary = train_encoder(config.vision, config.llm.vocab_size, batches, cfg, workdir=workdir,
                                 ignore=(tokenizer.pad_id, tokenizer.eos_id, tokenizer.bos_id), progress=progress,
                                 desc=f"{stage.name} @{stage.resolution}px")
    save_encoder(out, img)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"{stage.name} @{stage.resolution}px: {stage.steps} steps in {summary['seconds']:.0f}s, "
          f"final loss {summary['final_loss']:.3f} -> {out}")
    return out


def continue_at(params: Any, resolution_config) -> Any:
    """Params of one resolution -> the next: only the position embedding's grid changes."""
    img = dict(params["img"])
    img["pos_embedding"] = resample_posemb(img["pos_embedding"], resolution_config.num_image_tokens)
    return {**params, "img": img}


def stage_seed(stage: Stage, index: int) -> int:
    """A stage's seed: its own `seed:`, else its index in the config."""
    return index if stage.seed is None else stage.seed


def stage_sources(spec: PretrainSpec, size: str) -> dict[int, int | None]:
    """VLM stage index -> the index of the stage it continues (its `from:`, else the VLM stage before it;
    None for the first, which starts from stage 0's encoder or from scratch); stages that do not run for
    `size` are left out."""
    index = {s.name: i for i, s in enumerate(spec.stages)}
    sources, previous = {}, None
    for i, stage in enumerate(spec.stages):
        if stage.kind == ENCODER or not stage.runs_for(size):
            continue
        sources[i] = index[stage.start] if stage.start is not None else previous
        previous = i
    return sources


def pretrain_size(spec: PretrainSpec, size: str, *, max_resolution: int | None = None,
                  progress: bool = True, mesh=None) -> list[Path]:
    """Runs the stages for one size. Resumable: a stage whose .npz exists is loaded, not rerun, and a
    stage in progress checkpoints every 100 steps under {out}/.work and resumes from there. `mesh`: the
    trainer's (data, model) mesh (default: one device); the same sharded step as fine-tuning.

    A resolution's checkpoint ({size}-{resolution}.npz) is its last stage's; a stage followed by another at
    the same resolution writes {size}-{resolution}-{stage name}.npz. Work goes backwards from those
    checkpoints (each resolution <= `max_resolution`, lowest first): a stage runs only when a stage that
    is needed continues from it and its file is missing, so a stage is skipped once every stage after it
    on its chain has written its file (a rebuild may start from shipped checkpoints copied under the stages'
    names). Returns the files trained or loaded, each once, in the order first reached."""
    tokenizer = Tokenizer(spec.tokenizer)
    outs, sources = stage_outputs(spec, size), stage_sources(spec, size)
    encoder_stage = next((i for i, s in enumerate(spec.stages) if s.kind == ENCODER), None)
    written: list[Path] = []
    held: dict[int, Any] = {}  # the params of the stage reached last (a chain continues from it)

    def params_of(i: int) -> Any:
        if i in held:
            return held[i]
        stage, out = spec.stages[i], outs[i]
        config = config_for(size, stage.resolution)
        if out.exists():
            _, params = checkpoint.load_npz(str(out), config, dtype=np.float32)
            print(f"{size} {stage.name} @{stage.resolution}px: {out} exists, kept (delete it to redo)")
        else:
            params = train_stage(i, config, None if sources[i] is None else params_of(sources[i]))
        if out not in written:
            written.append(out)
        held.clear()
        held[i] = params
        return params

    def train_stage(i: int, config, params: Any) -> Any:
        stage, out = spec.stages[i], outs[i]
        if params is None:
            params = init_params(config, jax.random.key(0))
            if encoder_stage is not None:  # stage 0's encoder, at this stage's resolution
                encoder = pretrain_encoder_stage(spec, spec.stages[encoder_stage], encoder_stage, tokenizer, size,
                                                 progress=progress)
                params = with_encoder(params, load_encoder(encoder))
        params = continue_at(params, config)
        seed = stage_seed(stage, i)
        batches = mixture_batches(pretraining_sources(spec, stage), tokenizer, text_len=stage.text_len,
                                  resolution=stage.resolution, batch_size=spec.batch_size,
                                  num_steps=stage.steps, seed=spec.data_seed + seed)
        cfg = TrainConfig(lr=spec.lr, num_steps=stage.steps, weight_decay=spec.weight_decay, seed=seed,
                          checkpoint_every=100, img_tower_lr_mult=stage.img_tower_lr_mult,
                          **freeze_flags(stage.freeze))
        workdir = spec.out / ".work" / out.stem
        t0 = time.perf_counter()
        params, summary = train(config, params, batches, cfg, workdir=workdir, progress=progress,
                                desc=f"{size} {stage.name} @{stage.resolution}px", mesh=mesh)
        # Stored in bfloat16 like the released checkpoints (half the bytes to ship); the next stage
        # continues from the stored values, so a resumed run and an uninterrupted one agree.
        params = jax.tree.map(lambda x: x.astype(np.float32), save_bf16(out, params))
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"{size} {stage.name} @{stage.resolution}px: {stage.steps} steps in "
              f"{time.perf_counter() - t0:.0f}s, final loss {summary['final_loss']:.3f} -> {out}")
        return params

    last = {spec.stages[i].resolution: i for i in sorted(sources)}  # each resolution's last stage
    for resolution in sorted(last):
        if max_resolution is None or resolution <= max_resolution:
            params_of(last[resolution])
    return written


def stage_outputs(spec: PretrainSpec, size: str) -> dict[int, Path]:
    """Stage index -> the .npz a VLM stage writes: {size}-{resolution}.npz for a resolution's last stage,
    {size}-{resolution}-{stage name}.npz for one that another stage at its resolution follows. Stages that
    do not run for `size` have no file and do not count as followers."""
    vlm = [(i, s) for i, s in enumerate(spec.stages) if s.kind != ENCODER and s.runs_for(size)]
    outs = {}
    for k, (i, stage) in enumerate(vlm):
        last = all(later.resolution != stage.resolution for _, later in vlm[k + 1:])
        outs[i] = spec.out / (f"{size}-{stage.resolution}.npz" if last
                              else f"{size}-{stage.resolution}-{stage.name}.npz")
    return outs


def pretrain(spec_path: str | Path, sizes: tuple[str, ...] | None = None, *,
             max_resolution: int | None = None, progress: bool = True, mesh=None,
             out: str | Path | None = None) -> list[Path]:
    spec = load_spec(spec_path)
    if out is not None:
        spec = dataclasses.replace(spec, out=Path(out))
    return [p for size in (sizes or spec.sizes)
            for p in pretrain_size(spec, size, max_resolution=max_resolution, progress=progress, mesh=mesh)]


def make_tokenizer(spec: PretrainSpec, vocab_size: int) -> Path:
    """Train the nano SentencePiece model on the prompts and targets of every task's generated data."""
    from model.train_tokenizer import train_tokenizer

    lines = []
    for name in PRETRAIN_TASKS:
        task = get_task(name)
        manual = spec.data_root / name
        if not manual.is_dir() or not any(manual.iterdir()):
            task.write_demo(manual, num_train=spec.num_train, num_eval=8, seed=spec.data_seed)
        for ex in task.examples(manual, "train"):
            lines.append(ex.prefix)
            lines.extend(ex.targets)
    return train_tokenizer(lines, vocab_size, spec.tokenizer)
