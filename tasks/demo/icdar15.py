"""Demo ICDAR'15 data: rotated words on textured backgrounds, in the official Challenge 4 layout.

Writes `ch4_training_images/img_N.jpg` + `ch4_training_localization_transcription_gt/gt_img_N.txt` and
`ch4_test_images/img_N.jpg` + `Challenge4_Test_Task4_GT/gt_img_N.txt`; GT files are UTF-8 with BOM and
CRLF line ends like the official ones, one `x1,y1,...,x4,y4,transcription` line per word, corners
clockwise from the word's top-left in image coordinates, `###` for illegible words.

Scale is chosen for the demo grid (32 / 64 px inputs from 384 x 256 images): each scene has 1-3 sign
words from a bounded vocabulary (about 170 scene words, in upper, title or lower case) drawn at 28-40 px,
an x-height of about 15-22 px: 3.8-5.5 px once the image is resized to 64 px (legible) and 1.9-2.7 px at
32 px (not), so reading the words needs the higher resolution as text spotting needs 448-896 px in the
paper. Now and then a tiny blurred word (~5 px) is marked `###`, as ICDAR'15 marks illegible text.
`docs/demo-findings.md` §3 gives the x-height at each grid resolution.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

WIDTH, HEIGHT = 384, 256
FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
         "DejaVuSansMono-Bold.ttf")
SPLITS = (  # (image folder, GT folder, split index for the seed)
    ("ch4_training_images", "ch4_training_localization_transcription_gt", 0),
    ("ch4_test_images", "Challenge4_Test_Task4_GT", 1),
)
# Scene words (shop signs, streets, notices); case and random codes are varied on top of them.
WORDS = (
    "EXIT STOP OPEN CLOSED SALE PUSH PULL PARKING CAFE COFFEE TEA BAR HOTEL BANK TAXI BUS TRAIN METRO "
    "STATION ENTRANCE TOILET LIFT FLOOR LEVEL GATE ROAD STREET AVENUE PLAZA MALL SHOP STORE MARKET FOOD "
    "PIZZA BURGER NOODLE SUSHI BAKERY FRESH FRUIT JUICE WATER DRINKS MENU PRICE OFFER FREE NEW HOT COLD "
    "ICE CREAM BOOKS MUSIC CINEMA TICKETS INFO HELP POLICE FIRE DANGER CAUTION WARNING NO SMOKING ONLY "
    "STAFF PRIVATE WELCOME THANK YOU SORRY TODAY DAILY WEEKLY HOURS DOOR ROOM OFFICE CLINIC PHARMACY "
    "DENTAL SALON FASHION SHOES BAGS WATCH PHONE MOBILE REPAIR SERVICE CENTRE CITY PARK GARDEN TOWER "
    "BRIDGE NORTH SOUTH EAST WEST LEFT RIGHT LANE KEEP CLEAR SLOW SCHOOL ZONE DRIVE WALK WAIT CROSS "
    "SUPER BEST GOLD STAR KING QUEEN ROYAL GRAND ORIENT PACIFIC CLUB SPORT GYM FITNESS YOGA SPA BEAUTY"
).split()
WORD_SIZES = (28, 40)  # inclusive font-size bounds of the legible words
TINY_SIZES = (6, 8)  # the `###` words


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return _cached_font(str(FONT_DIR / name), size)


@functools.lru_cache(maxsize=512)
def _cached_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _word(rng: np.random.Generator) -> str:
    """A scene word in upper, title or lower case (a bounded vocabulary, so a tiny model can learn it)."""
    word = str(rng.choice(WORDS))
    case = rng.random()
    return word if case < 0.4 else word.title() if case < 0.8 else word.lower()


def _background(rng: np.random.Generator) -> Image.Image:
    """Smooth colour blobs + fine noise + a few faint shapes: texture without any text."""
    coarse = rng.uniform(0, 255, size=(int(rng.integers(2, 6)), int(rng.integers(3, 8)), 3))
    base = Image.fromarray(coarse.astype(np.uint8)).resize((WIDTH, HEIGHT), Image.BICUBIC)
    noise = rng.normal(0, rng.uniform(3, 12), size=(HEIGHT, WIDTH, 1))
    image = Image.fromarray(np.clip(np.asarray(base, np.float32) + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 6))):
        x0, y0 = rng.uniform(-50, WIDTH), rng.uniform(-50, HEIGHT)
        box = [x0, y0, x0 + rng.uniform(20, 160), y0 + rng.uniform(10, 100)]
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, outline=colour,
                                                                 width=int(rng.integers(1, 4)))
    return image


def _rotated_quad(corners: np.ndarray, centre: tuple[float, float], degrees: float) -> np.ndarray:
    """Corners given relative to the patch centre, rotated counter-clockwise on screen as PIL does."""
    a = math.radians(degrees)
    x, y = corners[:, 0], corners[:, 1]
    return np.stack([centre[0] + x * math.cos(a) + y * math.sin(a),
                     centre[1] - x * math.sin(a) + y * math.cos(a)], axis=1)


def _contrast(luma: float, rng: np.random.Generator) -> tuple[int, int, int]:
    tint = rng.integers(0, 70, size=3)
    return tuple(int(c) for c in (tint if luma > 128 else 255 - tint))


def _place_word(image: Image.Image, rng: np.random.Generator, size: int, word: str,
                taken: list[np.ndarray], plate: bool, blur: float) -> np.ndarray | None:
    """Draw `word` rotated at a free random spot; return its 4x2 quad (TL, TR, BR, BL) or None."""
    font = _font(str(rng.choice(FONTS)), size)
    left, top, right, bottom = font.getbbox(word)
    pad = max(2, size // 4)
    margin = max(1.0, size * 0.08)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    ink = np.array([[pad - margin, pad - margin], [w - pad + margin, pad - margin],
                    [w - pad + margin, h - pad + margin], [pad - margin, h - pad + margin]])
    angle = float(rng.normal(0, 12)) if rng.random() < 0.7 else 0.0
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((pad - left, pad - top), word, font=font, fill=255)
    rotated = mask.rotate(angle, resample=Image.BICUBIC, expand=True)
    if blur:
        rotated = rotated.filter(ImageFilter.GaussianBlur(blur))
    if rotated.width >= WIDTH or rotated.height >= HEIGHT:
        return None
    for _ in range(30):
        cx = rng.uniform(rotated.width / 2, WIDTH - rotated.width / 2)
        cy = rng.uniform(rotated.height / 2, HEIGHT - rotated.height / 2)
        x0, y0 = round(cx - rotated.width / 2), round(cy - rotated.height / 2)
        centre = (x0 + rotated.width / 2, y0 + rotated.height / 2)
        quad = _rotated_quad(ink - [w / 2, h / 2], centre, angle)
        lo, hi = quad.min(axis=0) - 2, quad.max(axis=0) + 2
        if lo.min() < 0 or hi[0] > WIDTH - 1 or hi[1] > HEIGHT - 1:
            continue
        if any((lo < b[1]).all() and (b[0] < hi).all() for b in taken):
            continue
        taken.append(np.stack([lo, hi]))
        region = np.asarray(image.crop((int(lo[0]), int(lo[1]), int(hi[0]) + 1, int(hi[1]) + 1)))
        luma = float(region.mean()) if region.size else 128.0
        if plate:
            luma = float(rng.uniform(0, 255))
            fill = (int(luma), int(luma), int(rng.integers(0, 256)))
            ImageDraw.Draw(image).polygon([tuple(p) for p in quad], fill=fill)
        colour = Image.new("RGB", rotated.size, _contrast(luma, rng))
        image.paste(colour, (x0, y0), rotated)
        return quad
    return None


def render(rng: np.random.Generator) -> tuple[Image.Image, list[tuple[np.ndarray, str]]]:
    """One scene: its image and [(quad, transcription)] with `###` for the illegible words."""
    image = _background(rng)
    taken: list[np.ndarray] = []
    words = []
    legible = int(rng.integers(1, 4))
    tiny = int(rng.random() < 0.3)
    plan = ([(int(rng.integers(WORD_SIZES[0], WORD_SIZES[1] + 1)), False) for _ in range(legible)]
            + [(int(rng.integers(TINY_SIZES[0], TINY_SIZES[1] + 1)), True) for _ in range(tiny)])
    for size, illegible in plan:
        word = _word(rng)
        quad = _place_word(image, rng, size, word, taken, plate=not illegible and rng.random() < 0.5,
                           blur=float(rng.uniform(0.6, 1.2)) if illegible else 0.0)
        if quad is not None:
            words.append((quad, "###" if illegible else word))
    return image, words


def gt_lines(words: list[tuple[np.ndarray, str]]) -> bytes:
    """The official GT file body: BOM, integer corners, CRLF."""
    lines = [",".join(str(int(round(v))) for v in quad.reshape(-1)) + "," + word for quad, word in words]
    return ("\ufeff" + "".join(line + "\r\n" for line in lines)).encode("utf-8")


def write_demo(manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
    """Write `num_train` training and `num_eval` test scenes; the same seed writes the same bytes."""
    root = Path(manual_dir)
    for (image_dir, gt_dir, index), count in zip(SPLITS, (num_train, num_eval)):
        (root / image_dir).mkdir(parents=True, exist_ok=True)
        (root / gt_dir).mkdir(parents=True, exist_ok=True)
        for n in range(1, count + 1):
            image, words = render(np.random.default_rng([seed, index, n]))
            image.save(root / image_dir / f"img_{n}.jpg", format="JPEG", quality=90)
            (root / gt_dir / f"gt_img_{n}.txt").write_bytes(gt_lines(words))
