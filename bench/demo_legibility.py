"""How large the demo's text is once the harness has resized an image to each grid resolution.

    python bench/demo_legibility.py                       # the demo grid's resolutions (32 and 64 px)
    python bench/demo_legibility.py --resolutions 32 64 128 --num 80

For the text-heavy demo tasks it writes the eval split with the demo's seed into a temporary folder and
measures, per text item the annotations locate (DocVQA: the words of the release-format OCR files;
PubTabNet: the non-empty cells' boxes; ICDAR'15: the legible words' quads):

* core height: the rows of the item's crop whose ink is at least half the densest row's, i.e. the
  x-height band of lower-case text, the cap height of capitals and digits (measured on the pixels;
  DocVQA and PubTabNet, whose dark ink on a light page separates by a threshold);
* x-height: the ink height of "x" in the generator's fonts at its font sizes (ICDAR'15, whose coloured
  words on textured scenes do not threshold cleanly);
* coloured ink (ChemDraw, not redesigned: RDKit draws the molecules): the height of each connected
  component of coloured pixels of the eval drawings, i.e. the heteroatom labels (O, N, Cl, ...) together
  with the coloured halves of their bonds, so an upper bound on the label height;

each scaled as `harness/data.py` scales the image: by resolution / side of the padded square when the
task's recipe pads (PubTabNet), by resolution / image height otherwise. Medians and ranges (5th-95th
percentile) in output pixels. Rule of thumb: text with an x-height under ~3 px is not legible to a
ViT with 8 px patches; 4-6 px is.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from tasks.demo import icdar15, pubtabnet  # noqa: E402
from tasks.registry import get_task  # noqa: E402


def core_height(crop: np.ndarray, threshold: int = 128) -> int:
    """Rows whose dark-ink count is at least half the densest row's: the x-height band (or cap height)."""
    ink = (crop < threshold).sum(axis=1)
    if not ink.any():
        return 0
    rows = np.flatnonzero(ink >= ink.max() / 2)
    return int(rows[-1] - rows[0] + 1)


def docvqa_items(root: Path) -> list[tuple[float, float]]:
    """(core height in source px, the side it is scaled by) of every OCR word of every page."""
    out = []
    for path in sorted((root / "ocr_results").iterdir()):
        page = np.asarray(Image.open(root / "documents" / (path.stem + ".png")).convert("L"))
        result = json.loads(path.read_text())["recognitionResults"][0]
        for line in result["lines"]:
            for word in line["words"]:
                x0, y0, x1, _, _, y1, _, _ = word["boundingBox"]
                out.append((core_height(page[y0:y1 + 1, x0:x1 + 1]), page.shape[0]))
    return out


def pubtabnet_items(root: Path) -> list[tuple[float, float]]:
    out = []
    for line in (root / pubtabnet.ANNOTATIONS).read_text().splitlines():
        r = json.loads(line)
        image = np.asarray(Image.open(root / r["split"] / r["filename"]).convert("L"))
        side = max(image.shape)  # padded to a square before the resize
        for cell in r["html"]["cells"]:
            if "bbox" in cell:
                x0, y0, x1, y1 = cell["bbox"]
                out.append((core_height(image[y0:y1 + 1, x0:x1 + 1]), side))
    return out


def icdar15_items(root: Path) -> list[tuple[float, float]]:
    """x-height of the generator's fonts at its legible word sizes (every font x size pair)."""
    sizes = range(icdar15.WORD_SIZES[0], icdar15.WORD_SIZES[1] + 1)
    out = []
    for name in icdar15.FONTS:
        for size in sizes:
            _, top, _, bottom = ImageFont.truetype(str(icdar15.FONT_DIR / name), size).getbbox("x")
            out.append((bottom - top, icdar15.HEIGHT))
    return out


def chemdraw_items(root: Path) -> list[tuple[float, float]]:
    from scipy import ndimage

    out = []
    for path in sorted((root / "synthetic" / "chemdraw").glob("*.png")):
        rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
        coloured = (np.abs(rgb[..., 0] - rgb[..., 2]) > 80) | (np.abs(rgb[..., 1] - rgb[..., 2]) > 80)
        labels, _ = ndimage.label(coloured)
        side = max(rgb.shape[:2])  # padded to a square before the resize
        heights = [s[0].stop - s[0].start for s in ndimage.find_objects(labels)]
        out += [(h, side) for h in heights if h >= 4]  # specks of anti-aliasing are not labels
    return out


MEASURES = {"docvqa": ("core height (pixels)", docvqa_items),
            "pubtabnet": ("core height (pixels)", pubtabnet_items),
            "icdar15": ("x-height (font metric)", icdar15_items),
            "chemdraw": ("coloured ink height (pixels)", chemdraw_items)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--num", type=int, default=40, help="eval examples written per task (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="demo data seed (default 0, the demo grid's)")
    args = parser.parse_args()
    header = " | ".join(f"{r} px" for r in args.resolutions)
    print(f"| task | measure | source px | {header} |")
    print("|---|---|---|" + "---|" * len(args.resolutions))
    with tempfile.TemporaryDirectory() as tmp:
        for name, (what, measure) in MEASURES.items():
            root = Path(tmp) / name
            get_task(name).write_demo(root, num_train=1, num_eval=args.num, seed=args.seed)
            items = np.array(measure(root), dtype=np.float64)
            heights, sides = items[:, 0], items[:, 1]
            cells = []
            for res in args.resolutions:
                scaled = heights * res / sides
                lo, mid, hi = np.percentile(scaled, [5, 50, 95])
                cells.append(f"{mid:.1f} ({lo:.1f}-{hi:.1f})")
            print(f"| {name} | {what} | {np.median(heights):.0f} of {np.median(sides):.0f} | "
                  + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
