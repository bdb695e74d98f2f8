"""Synthetic MIMIC-CXR: radiograph-like images and templated reports whose findings match them.

Written in the MIMIC-CXR-JPG layout (`files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg`, the report
`files/pXX/pNNNNNNNN/sNNNNNNNN.txt`, `mimic-cxr-2.0.0-split.csv.gz`, `mimic-cxr-2.0.0-metadata.csv.gz`),
so the real builder reads it. Each study draws findings (a lobar opacity, a pleural effusion at a
costophrenic angle, cardiomegaly, an apical pneumothorax, or none), renders them on a frontal
view (and sometimes a lateral one), and words them in FINDINGS and IMPRESSION sections from
phrases the lexicon RadGraph annotator of metrics/radgraph.py covers. Radiological convention:
the patient's right is on the image's left.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

WIDTH, HEIGHT = 320, 352
LOBES = ("right upper lobe", "right lower lobe", "left upper lobe", "left lower lobe")
SPLIT_HEADER = ["dicom_id", "study_id", "subject_id", "split"]
METADATA_HEADER = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
                   "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
                   "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
                   "PatientOrientationCodeSequence_CodeMeaning"]


@dataclass(frozen=True)
class Findings:
    view: str  # "PA" or "AP"
    opacity: str | None = None  # a lobe
    effusion: tuple[str, str] | None = None  # (side: right / left / bilateral, small / moderate)
    cardiomegaly: str | None = None  # mild / moderate
    pneumothorax: str | None = None  # right / left

    @property
    def normal(self) -> bool:
        return not (self.opacity or self.effusion or self.cardiomegaly or self.pneumothorax)


def sample_findings(rng: random.Random) -> Findings:
    return Findings(
        view=rng.choice(("PA", "PA", "AP")),
        opacity=rng.choice(LOBES) if rng.random() < 0.35 else None,
        effusion=(rng.choice(("right", "left", "bilateral")), rng.choice(("small", "moderate")))
        if rng.random() < 0.3 else None,
        cardiomegaly=rng.choice(("mild", "moderate")) if rng.random() < 0.3 else None,
        pneumothorax=rng.choice(("right", "left")) if rng.random() < 0.12 else None)


# --- images ------------------------------------------------------------------------------------

_Y, _X = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((_X - cx) / rx) ** 2 + ((_Y - cy) / ry) ** 2 <= 1.0


def render_frontal(f: Findings, rng: random.Random) -> Image.Image:
    """A PA/AP chest radiograph caricature: body, lungs, mediastinum, heart, ribs and the findings."""
    j = lambda scale: rng.uniform(-scale, scale)  # noqa: E731 - positional jitter
    img = np.full((HEIGHT, WIDTH), 12.0, np.float32)
    cx = WIDTH * (0.5 + j(0.02))
    body = _ellipse(cx, HEIGHT * 0.56, WIDTH * (0.47 + j(0.02)), HEIGHT * 0.52)
    img[body] = 95
    img[body & (_Y > HEIGHT * (0.80 + j(0.02)))] = 120  # abdomen below the diaphragm
    img[body & (np.abs(_X - cx) < WIDTH * 0.035)] = 130  # spine
    lungs = {}
    for side, sign in (("right", -1), ("left", 1)):  # patient's right = image left
        lx = cx + sign * WIDTH * (0.19 + j(0.015))
        ly, rx, ry = HEIGHT * (0.46 + j(0.02)), WIDTH * (0.15 + j(0.01)), HEIGHT * (0.29 + j(0.02))
        lungs[side] = (lx, ly, rx, ry)
        mask = _ellipse(lx, ly, rx, ry)
        img[mask] = 38
        for k in range(6):  # ribs: bright arcs across the lung
            y0 = ly - ry + (k + 0.7) * ry * 2 / 7
            arc = np.abs(_Y - (y0 + 0.08 * ry * ((_X - lx) / rx) ** 2)) < 2.5
            img[mask & arc] += 22
    img[_ellipse(cx, HEIGHT * 0.33, WIDTH * 0.07, HEIGHT * 0.2)] = 150  # mediastinum
    heart_rx = WIDTH * 0.14 * {None: 1.0, "mild": 1.35, "moderate": 1.6}[f.cardiomegaly]
    heart_rx *= 1.08 if f.view == "AP" else 1.0  # AP magnifies the heart a little
    img[_ellipse(cx + WIDTH * 0.04, HEIGHT * (0.62 + j(0.01)), heart_rx, HEIGHT * 0.12)] = 165
    if f.opacity:
        side, part = f.opacity.split()[:2]
        lx, ly, rx, ry = lungs[side]
        oy = ly + (-0.45 if part == "upper" else 0.45) * ry + j(0.05) * ry
        ox, r = lx + j(0.3) * rx, WIDTH * rng.uniform(0.05, 0.075)
        blob = np.exp(-(((_X - ox) ** 2 + (_Y - oy) ** 2) / (2 * r * r)))
        img += 95 * blob * _ellipse(lx, ly, rx, ry)
    if f.effusion:
        side, size = f.effusion
        for s in (("right", "left") if side == "bilateral" else (side,)):
            lx, ly, rx, ry = lungs[s]
            depth = ry * (0.35 if size == "small" else 0.6)
            outward = np.clip((_X - lx) * (1 if s == "left" else -1) / rx, 0, 1)
            level = ly + ry - depth * (1 + 0.35 * outward)  # a meniscus, higher laterally
            img[_ellipse(lx, ly, rx, ry) & (_Y > level)] = 135
    if f.pneumothorax:
        lx, ly, rx, ry = lungs[f.pneumothorax]
        sign = 1 if f.pneumothorax == "left" else -1
        apex = _ellipse(lx + sign * 0.35 * rx, ly - 0.6 * ry, 0.55 * rx, 0.35 * ry)
        img[apex & _ellipse(lx, ly, rx, ry)] = 8  # no lung markings, darker than lung
    img += np.float32(rng.gauss(0, 1)) * 4 + np.random.default_rng(rng.getrandbits(32)).normal(
        0, 5, img.shape).astype(np.float32)
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L")
    return image.filter(ImageFilter.GaussianBlur(1.2))


def render_lateral(rng: random.Random) -> Image.Image:
    """A lateral view: body in profile, spine at the back, heart in front."""
    img = np.full((HEIGHT, WIDTH), 12.0, np.float32)
    img[_ellipse(WIDTH * 0.5, HEIGHT * 0.55, WIDTH * 0.36, HEIGHT * 0.5)] = 95
    img[_ellipse(WIDTH * 0.5, HEIGHT * 0.47, WIDTH * 0.26, HEIGHT * 0.3)] = 45
    img[np.abs(_X - WIDTH * (0.72 + rng.uniform(-0.02, 0.02))) < WIDTH * 0.04] = 140
    img[_ellipse(WIDTH * 0.38, HEIGHT * 0.6, WIDTH * 0.13, HEIGHT * 0.13)] = 160
    img += np.random.default_rng(rng.getrandbits(32)).normal(0, 5, img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").filter(
        ImageFilter.GaussianBlur(1.2))


# --- reports -----------------------------------------------------------------------------------

_SYMPTOMS = ("cough", "fever", "shortness of breath", "chest pain", "hypoxia", "dyspnea",
             "productive cough", "fever and cough", "leg swelling", "fatigue")
_CONCERN = {"opacity": "pneumonia", "effusion": "effusion", "cardiomegaly": "CHF",
            "pneumothorax": "pneumothorax"}


def indication(f: Findings, rng: random.Random) -> str:
    present = [k for k in _CONCERN if getattr(f, k)]
    concern = _CONCERN[rng.choice(present)] if present and rng.random() < 0.6 else \
        rng.choice(("pneumonia", "acute process", "infiltrate", "effusion"))
    symptom = rng.choice(_SYMPTOMS)
    sex = rng.choice(("man", "woman"))
    return rng.choice((
        f"___-year-old {sex} with {symptom}.  Evaluate for {concern}.",
        f"___{sex[0].upper()} with {symptom}  // r/o {concern}",
        f"History of {rng.choice(('COPD', 'CHF', 'asthma', 'lung cancer'))}, now with {symptom}. "
        f"Assess for {concern}.",
        f"{symptom.capitalize()}, ? {concern}"))


def findings_text(f: Findings, rng: random.Random) -> str:
    sentences = []
    if f.opacity:
        sentences.append(rng.choice((
            f"There is a focal opacity in the {f.opacity}.",
            f"Patchy opacity is seen in the {f.opacity}.",
            f"{f.opacity.capitalize()} consolidation is present.")))
    else:
        sentences.append(rng.choice(("No focal consolidation.",
                                     "The lungs are clear without focal consolidation.",
                                     "There is no focal opacity.")))
    if f.effusion:
        side, size = f.effusion
        sentences.append(f"There are {size} bilateral pleural effusions." if side == "bilateral"
                         else rng.choice((f"There is a {size} {side} pleural effusion.",
                                          f"{size.capitalize()} {side} pleural effusion is noted.")))
    if f.pneumothorax:
        sentences.append(f"There is a small {f.pneumothorax} apical pneumothorax.")
    if not f.effusion and not f.pneumothorax:
        sentences.append(rng.choice(("No pleural effusion or pneumothorax.",
                                     "There is no pleural effusion or pneumothorax.")))
    elif not f.pneumothorax:
        sentences.append("No pneumothorax is seen.")
    elif not f.effusion:
        sentences.append("No pleural effusion.")
    if f.cardiomegaly:
        adverb = {"mild": "mildly", "moderate": "moderately"}[f.cardiomegaly]
        sentences.append(rng.choice((f"The heart is {adverb} enlarged.",
                                     f"{f.cardiomegaly.capitalize()} cardiomegaly is present.")))
    else:
        sentences.append(rng.choice(("The cardiac silhouette is normal in size.",
                                     "Heart size is normal.",
                                     "The cardiomediastinal silhouette is normal.")))
    rng.shuffle(sentences)
    view = ("PA and lateral views of the chest were obtained." if f.view == "PA"
            else "Single portable AP view of the chest.")
    return " ".join([view] + sentences)


def impression_text(f: Findings, rng: random.Random) -> str:
    if f.normal:
        return rng.choice(("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality."))
    parts = []
    if f.opacity:
        parts.append(rng.choice((f"{f.opacity.capitalize()} opacity concerning for pneumonia.",
                                 f"{f.opacity.capitalize()} pneumonia.")))
    if f.effusion:
        side, size = f.effusion
        parts.append(f"{size.capitalize()} bilateral pleural effusions." if side == "bilateral"
                     else f"{size.capitalize()} {side} pleural effusion.")
    if f.pneumothorax:
        parts.append(f"Small {f.pneumothorax} apical pneumothorax.")
    if f.cardiomegaly:
        parts.append(f"{f.cardiomegaly.capitalize()} cardiomegaly.")
    return " ".join(parts)


def report_file(f: Findings, rng: random.Random) -> str:
    """The free-text report as MIMIC-CXR stores it: a title, then wrapped, indented sections."""
    def section(name: str, body: str, inline: bool) -> str:
        wrapped = textwrap.fill(body, 77, initial_indent=" ", subsequent_indent=" ")
        return f" {name}:  {body}\n \n" if inline else f" {name}: \n \n{wrapped}\n \n"

    technique = "Chest PA and lateral" if f.view == "PA" else "Portable AP chest"
    text = (" " * 33 + "FINAL REPORT\n"
            + f" EXAMINATION:  CHEST ({'PA AND LAT' if f.view == 'PA' else 'PORTABLE AP'})\n \n"
            + section(rng.choice(("INDICATION", "INDICATION", "HISTORY")), indication(f, rng), True)
            + section("TECHNIQUE", technique, True)
            + section("COMPARISON", rng.choice(("None.", "___.")), True))
    if rng.random() < 0.9:  # some real reports have an impression only
        text += section("FINDINGS", findings_text(f, rng), False)
    return text + section("IMPRESSION", impression_text(f, rng), False)


# --- files -------------------------------------------------------------------------------------

def _dicom_id(rng: random.Random) -> str:
    return "-".join(f"{rng.getrandbits(32):08x}" for _ in range(5))


def _write_csv_gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with gzip.GzipFile(path, "wb", mtime=0) as f:  # mtime 0: same bytes for the same seed
        f.write(buffer.getvalue().encode())


def write_mimic_demo(manual_dir: str | Path, *, num_train: int, num_eval: int, seed: int) -> None:
    """num_train training studies and num_eval studies each in `validate` and `test`."""
    rng = random.Random(seed)
    root = Path(manual_dir)
    plan = ["train"] * num_train + ["validate"] * num_eval + ["test"] * num_eval
    subjects = rng.sample(range(10_000_000, 20_000_000), len(plan))
    studies = rng.sample(range(50_000_000, 60_000_000), len(plan))
    split_rows, metadata_rows = [], []
    for split, subject, study in zip(plan, subjects, studies):
        f = sample_findings(rng)
        folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
        (folder / f"s{study}").mkdir(parents=True, exist_ok=True)
        (folder / f"s{study}.txt").write_text(report_file(f, rng))
        views = [(f.view, render_frontal(f, rng))]
        if rng.random() < 0.5:  # a lateral, sometimes listed first: the builder must skip it
            views.insert(rng.randrange(2), ("LATERAL", render_lateral(rng)))
        for view, image in views:
            dicom = _dicom_id(rng)
            image.save(folder / f"s{study}" / f"{dicom}.jpg", quality=90)
            split_rows.append([dicom, str(study), str(subject), split])
            metadata_rows.append([
                dicom, str(subject), str(study), "CHEST (PA AND LAT)", view, str(HEIGHT), str(WIDTH),
                "21800101", "120000.000", "CHEST (PA AND LAT)",
                {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}[view],
                "Erect"])
    _write_csv_gz(root / "mimic-cxr-2.0.0-split.csv.gz", SPLIT_HEADER, split_rows)
    _write_csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_HEADER, metadata_rows)
