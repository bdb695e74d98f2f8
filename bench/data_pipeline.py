"""The data path at the real datasets' size: preparing official-layout raw files, then (below) feeding them.

Preparation: writes VQAv2 (COCO-size JPEGs, the official question and annotation JSONs) or DocVQA
(1700 x 2200 PNG pages, the RRC JSONs) of the size given, prepares one split in a fresh process, and prints
examples per second, prepared bytes / raw bytes, bytes written on the way (from /proc/self/io), the peak
RSS of the preparing process, and whether TensorFlow was imported.

    python bench/data_pipeline.py vqav2 --images 2000                 # ~10.8k questions, ~0.3 GB of JPEGs
    python bench/data_pipeline.py vqav2 --images 82783 --tiny-images  # official train annotation size
    python bench/data_pipeline.py docvqa --pages 300

`--tiny-images` writes 64 x 48 JPEGs: the annotation JSONs at full size (443,757 questions) without 13 GB
of images, for the memory of the annotation path.

Feeding (`--pipeline`): the training pipeline (harness/cell/data.py: train_batches read by host_batches) over
the split prepared above, in examples per second at each `--resolutions`, with each `--workers` count, each
beside a plain loop that decodes and resizes the same examples one by one in this process, measured in the
same run; then the pipeline at n = 100k and n = 650k examples (the prepared split cycled to that length:
the cost of an example must not depend on n).

    python bench/data_pipeline.py vqav2 --images 2000 --pipeline --workers 1 2
    python bench/data_pipeline.py docvqa --pages 300 --pipeline --resolutions 896

Results: docs/data-pipeline.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
VQA_QUESTIONS_PER_IMAGE = 443_757 / 82_783  # official train2014: questions / images
DOCVQA_QUESTIONS_PER_PAGE = 39_463 / 10_194  # official train: questions / pages
WORDS = ("yes", "no", "2", "1", "white", "red", "blue", "frisbee", "tennis", "kitchen", "dog", "3", "black",
         "wood", "left", "pizza", "baseball", "skateboarding", "surfing", "giraffe", "nothing", "grass")


# --- official-layout raw files ---------------------------------------------------------------------------

def coco_jpeg(rng: np.random.Generator, tiny: bool) -> bytes:
    """A 640 x 480 JPEG of ~150-200 KB, as COCO's (the mean COCO image is 160 KB), or a 64 x 48 one."""
    import io

    h, w = (48, 64) if tiny else (480, 640)
    coarse = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.int16)
    pixels = np.clip(pixels + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def write_vqav2(root: Path, *, images: int, subtype: str = "train2014", tiny: bool = False,
                distinct: int = 64, seed: int = 0, per_image: float = VQA_QUESTIONS_PER_IMAGE) -> int:
    """Official VQAv2 files for `images` COCO images of `subtype` (questions per image as in the official
    train split); `distinct` different JPEGs are cycled over the files (each file is still its own image
    to the preparation). Returns the number of questions."""
    rng = np.random.default_rng(seed)
    (root / subtype).mkdir(parents=True, exist_ok=True)
    blobs = [coco_jpeg(rng, tiny) for _ in range(min(distinct, images))]
    questions, annotations = [], []
    counts = np.diff(np.floor(np.arange(images + 1) * per_image).astype(int))
    for i in range(images):
        image_id = 1 + i
        (root / subtype / f"COCO_{subtype}_{image_id:012d}.jpg").write_bytes(blobs[i % len(blobs)])
        for k in range(max(1, int(counts[i]))):
            qid = image_id * 1000 + k
            answer = WORDS[int(rng.integers(len(WORDS)))]
            questions.append({"image_id": image_id, "question": f"What is the {WORDS[k % len(WORDS)]} on the "
                              f"left of the picture number {k}?", "question_id": qid})
            annotations.append({
                "question_type": "what is the", "multiple_choice_answer": answer,
                "answers": [{"answer": answer if j < 7 else WORDS[int(rng.integers(len(WORDS)))],
                             "answer_confidence": "yes", "answer_id": j + 1} for j in range(10)],
                "image_id": image_id, "answer_type": "other", "question_id": qid})
    header = {"info": {"description": "bench data in the VQA v2 layout"}, "license": {"name": "CC BY 4.0"},
              "data_subtype": subtype}
    with open(root / f"v2_OpenEnded_mscoco_{subtype}_questions.json", "w", encoding="utf-8") as f:
        json.dump({**header, "task_type": "Open-Ended", "data_type": "mscoco", "questions": questions}, f)
    with open(root / f"v2_mscoco_{subtype}_annotations.json", "w", encoding="utf-8") as f:
        json.dump({**header, "data_type": "mscoco", "annotations": annotations}, f)
    return len(questions)


def docvqa_page(rng: np.random.Generator) -> bytes:
    """A 1700 x 2200 PNG page of dark 'text' lines on white, as the scanned DocVQA pages."""
    import io

    page = np.full((2200, 1700), 255, dtype=np.uint8)
    for top in range(150, 2050, 36):
        if rng.random() < 0.25:
            continue
        width = int(rng.integers(300, 1400))
        ink = rng.random((18, width)) < 0.45
        page[top:top + 18, 150:150 + width][ink] = rng.integers(0, 90, int(ink.sum()), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(page).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_docvqa(root: Path, *, pages: int, split: str = "train", distinct: int = 32, seed: int = 0) -> int:
    """RRC DocVQA files: `pages` pages of `split` (questions per page as in the official train split)."""
    rng = np.random.default_rng(seed)
    (root / "documents").mkdir(parents=True, exist_ok=True)
    blobs = [docvqa_page(rng) for _ in range(min(distinct, pages))]
    data = []
    counts = np.diff(np.floor(np.arange(pages + 1) * DOCVQA_QUESTIONS_PER_PAGE).astype(int))
    for i in range(pages):
        name = f"documents/bench{i:06d}_1.png"
        (root / name).write_bytes(blobs[i % len(blobs)])
        for k in range(max(1, int(counts[i]))):
            data.append({"questionId": i * 100 + k, "question": f"What is the total on line {k}?",
                         "question_types": ["form"], "image": name, "docId": i, "ucsf_document_id": f"b{i}",
                         "ucsf_document_page_no": "1", "answers": [f"{k * 17}.00", f"${k * 17}"],
                         "data_split": split})
    with open(root / f"{split}_v1.0_withQT.json", "w", encoding="utf-8") as f:
        json.dump({"dataset_name": "docvqa", "dataset_split": split, "dataset_version": "1.0", "data": data}, f)
    return len(data)


# --- preparation, measured in a fresh process -------------------------------------------------------------

_PREPARE = """
import json, sys, time
t = time.perf_counter()
from tasks.registry import get_task
task = get_task(sys.argv[1])
data = task.prepare(sys.argv[2], cache_dir=sys.argv[3], splits={sys.argv[4]})
seconds = time.perf_counter() - t
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
print(json.dumps({"seconds": seconds, "examples": data.sizes[sys.argv[4]], "written": int(io["write_bytes"]),
                  "tensorflow": "tensorflow" in sys.modules}))
"""


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def measure_prepare(task: str, raw: Path, cache: Path, split: str) -> dict:
    """Prepare `split` of `raw` into `cache` in a child process (the first this process starts, so the
    children's RSS peak is its); its time, RSS peak and bytes."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _PREPARE, task, str(raw), str(cache), split], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    raw_bytes, prepared = folder_bytes(raw), folder_bytes(cache / task)
    return {**out, "peak_rss_gib": peak_kib / 2**20,
            "raw_bytes": raw_bytes, "prepared_bytes": prepared}


# --- feeding: the training pipeline against a plain decode-resize loop -------------------------------------

class Cycled:
    """The examples repeated to length n: a split of n examples whose items cost what the real ones do."""

    def __init__(self, examples, n: int):
        self.examples, self.n = examples, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.examples[i % len(self.examples)]


# Each rate is the best of this many consecutive windows (the CPUs are shared: the best window is the
# least disturbed one).
WINDOWS = 3


def plain_rate(examples, resolution: int, count: int) -> float:
    """Examples/s of decode + resize (host_image), one example after another in this process."""
    from harness.cell.data import host_image

    best, i = 0.0, 0
    for _ in range(WINDOWS):
        start = time.perf_counter()
        for _ in range(count):
            host_image(examples[i % len(examples)].image, resolution)
            i += 1
        best = max(best, count / (time.perf_counter() - start))
    return best


def pipeline_rate(examples, tokenizer, resolution: int, *, workers: int, batch_size: int, batches: int) -> float:
    """Examples/s of the training pipeline with `workers` worker processes in its steady state: timed after
    twice as many batches as its buffers hold (worker start-up, once per cell, and the batches read
    ahead meanwhile left out)."""
    from harness.cell.data import READ_AHEAD, READ_THREADS, TextSpec, host_batches, train_batches

    warm = 2 * max(1, workers) * (READ_AHEAD + READ_THREADS)
    spec = TextSpec(text_len=32, square_pad=False, resolution=resolution)
    ds = train_batches(examples, tokenizer, spec, batch_size=batch_size, num_steps=warm + WINDOWS * batches,
                       seed=0)
    it = host_batches(ds, workers=workers)
    for _ in range(warm):
        next(it)
    best = 0.0
    for _ in range(WINDOWS):
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        best = max(best, batches * batch_size / (time.perf_counter() - start))
    it.close()
    return best


def measure_pipeline(task: str, raw: Path, cache: Path, *, resolutions: list[int], workers: list[int],
                     batch_size: int, batches: int) -> list[tuple]:
    from harness.cell.recipe import NANO_TOKENIZER
    from model.tokenizer import Tokenizer
    from tasks.base import ExampleSource
    from tasks.records import RecordView
    from tasks.registry import get_task

    plugin = get_task(task)  # the prepared `train` split itself (VQAv2's train role also wants val2014)
    data = plugin.prepare(raw, cache_dir=cache, splits={"train"})
    examples = ExampleSource(plugin, RecordView(data.splits, f"train[0:{data.sizes['train']}]"))
    tokenizer = Tokenizer(NANO_TOKENIZER)
    count = batch_size * batches
    rows = []
    for resolution in resolutions:
        for w in workers:
            plain = plain_rate(examples, resolution, count)
            rate = pipeline_rate(examples, tokenizer, resolution, workers=w, batch_size=batch_size, batches=batches)
            rows.append((f"{resolution} px", f"{w} worker{'s' if w > 1 else ''}", f"{plain:.1f}", f"{rate:.1f}",
                         f"{rate / plain / max(w, 1):.2f}"))
    resolution = resolutions[0]
    for n in (100_000, 650_000):
        rate = pipeline_rate(Cycled(examples, n), tokenizer, resolution, workers=workers[0], batch_size=batch_size,
                             batches=batches)
        rows.append((f"{resolution} px, n = {n:,}", f"{workers[0]} worker{'s' if workers[0] > 1 else ''}", "",
                     f"{rate:.1f}", ""))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=("vqav2", "docvqa"))
    parser.add_argument("--images", type=int, default=2000, help="VQAv2: COCO images (questions x5.36)")
    parser.add_argument("--pages", type=int, default=300, help="DocVQA: pages (questions x3.87)")
    parser.add_argument("--tiny-images", action="store_true", help="VQAv2: 64 x 48 JPEGs (annotation memory)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temp folder)")
    parser.add_argument("--pipeline", action="store_true", help="then measure the training pipeline on the split")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[224, 448, 896])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="grain worker processes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4, help="batches per timed window (best of 3)")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pgt-data-bench-"))
    raw, cache = work / "raw", work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    t = time.perf_counter()
    if args.task == "vqav2":
        questions = write_vqav2(raw, images=args.images, tiny=args.tiny_images)
    else:
        questions = write_docvqa(raw, pages=args.pages)
    split = "train"
    print(f"wrote {questions} questions, {folder_bytes(raw) / 1e9:.2f} GB raw in {time.perf_counter() - t:.0f} s",
          file=sys.stderr)
    m = measure_prepare(args.task, raw, cache, split)
    rows = [("examples", m["examples"]), ("prepare s", f"{m['seconds']:.1f}"),
            ("prepare ex/s", f"{m['examples'] / m['seconds']:.0f}"),
            ("raw GB", f"{m['raw_bytes'] / 1e9:.3f}"), ("prepared GB", f"{m['prepared_bytes'] / 1e9:.3f}"),
            ("prepared / raw", f"{m['prepared_bytes'] / m['raw_bytes']:.3f}"),
            ("written / prepared", f"{m['written'] / max(1, m['prepared_bytes']):.3f}"),
            ("peak RSS GiB", f"{m['peak_rss_gib']:.2f}"), ("TensorFlow imported", m["tensorflow"])]
    for name, value in rows:
        print(f"| {name} | {value} |")
    if args.pipeline:
        print("| resolution | pipeline | plain loop ex/s | pipeline ex/s | pipeline / (plain x workers) |\n"
              "|---|---|---|---|---|")
        for row in measure_pipeline(args.task, raw, cache, resolutions=args.resolutions, workers=args.workers,
                                    batch_size=args.batch_size, batches=args.batches):
            print("| " + " | ".join(row) + " |")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
