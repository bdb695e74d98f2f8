"""MIMIC-CXR plugin: MIMIC-CXR-JPG layout -> TFDS (no tensorflow) -> Examples -> scores."""

import csv
import gzip
import math

import pytest
from PIL import Image

from metrics import radgraph
from metrics.radgraph import RadGraphUnavailable
from tasks.base import DataError
from tasks.mimic_cxr import MimicCxr, parse_sections
from tasks.registry import get_task

TASK = MimicCxr(annotator="lexicon")

REPORT_A = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___-year-old woman with cough.  Evaluate for
 pneumonia.

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is a small left pleural effusion.

 IMPRESSION:

 Mild cardiomegaly.
"""
# Lower-case headers, text on the header line, HISTORY instead of INDICATION, no FINDINGS.
REPORT_B = """ history: Fever
 Impression: No acute cardiopulmonary process.
 NOTIFICATION:  Discussed with the team.
"""
REPORT_C = "WET READ: ___\n FINDINGS: \n Right lower lobe opacity.\n RECOMMENDATION(S): Follow-up.\n"


def write_raw(root, studies, gz=True):
    """studies: (study_id, subject_id, split, report text or None, [(dicom_id, view, on disk)])."""
    split_rows, meta_rows = [], []
    for study, subject, split, report, images in studies:
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        (folder / f"s{study}").mkdir(parents=True)
        if report is not None:
            (folder / f"s{study}.txt").write_text(report)
        for n, (dicom, view, on_disk) in enumerate(images):
            if on_disk:
                Image.new("L", (40, 48), 60 * n).save(folder / f"s{study}" / f"{dicom}.jpg")
            split_rows.append([dicom, study, subject, split])
            meta_rows.append([dicom, subject, study, view])
    for name, header, rows in (("split", ["dicom_id", "study_id", "subject_id", "split"], split_rows),
                               ("metadata", ["dicom_id", "subject_id", "study_id", "ViewPosition"],
                                meta_rows)):
        path = root / f"mimic-cxr-2.0.0-{name}.csv{'.gz' if gz else ''}"
        with (gzip.open(path, "wt", newline="") if gz else open(path, "w", newline="")) as f:
            csv.writer(f).writerows([header] + rows)


STUDIES = [
    ("50000001", "10000001", "train", REPORT_A, [("lat-1", "LATERAL", True), ("pa-1", "PA", True)]),
    ("50000002", "10000002", "train", REPORT_B, [("ap-2", "AP", True), ("pa-2", "PA", False)]),
    ("50000003", "11000003", "validate", REPORT_C, [("ll-3", "LL", True)]),
    ("50000004", "11000004", "test", REPORT_A, [("pa-4", "PA", True)]),
    ("50000005", "11000005", "test", None, [("pa-5", "PA", True)]),  # report missing: skipped
    ("50000006", "11000006", "test", " INDICATION: x\n", [("pa-6", "PA", True)]),  # no target
]


def test_sections_robust_to_case_spacing_and_missing_sections():
    assert parse_sections(REPORT_A) == {
        "indication": "___-year-old woman with cough. Evaluate for pneumonia.",
        "findings": "There is a small left pleural effusion.", "impression": "Mild cardiomegaly."}
    assert parse_sections(REPORT_B) == {"indication": "Fever", "findings": "",
                                        "impression": "No acute cardiopulmonary process."}
    assert parse_sections(REPORT_C) == {"indication": "", "findings": "Right lower lobe opacity.",
                                        "impression": ""}
    assert parse_sections("FINDINGS AND IMPRESSION:  Clear lungs. Note: stable.") == {
        "indication": "", "findings": "Clear lungs. Note: stable.", "impression": ""}
    assert parse_sections("") == {"indication": "", "findings": "", "impression": ""}


def test_hand_written_study_layout(tmp_path):
    write_raw(tmp_path, STUDIES, gz=False)
    train = {e.id: e for e in TASK.examples(tmp_path, "train")}
    assert set(train) == {"50000001", "50000002"}
    a, b = train["50000001"], train["50000002"]
    assert a.prefix == "___-year-old woman with cough. Evaluate for pneumonia."
    assert a.targets == ("There is a small left pleural effusion. Mild cardiomegaly.",)
    assert a.reference == a.targets[0]
    assert a.image.shape == (48, 40, 3) and a.image[0, 0, 0] == 60  # the PA, not the lateral first
    assert (b.prefix, b.reference) == ("Fever", "No acute cardiopulmonary process.")
    assert b.image[0, 0, 0] == 0  # the AP: the PA is not on disk
    assert [e.id for e in TASK.examples(tmp_path, "minival")] == ["50000003"]  # lateral-only
    assert [e.id for e in TASK.examples(tmp_path, "eval")] == ["50000004"]


def test_demo_round_trip_and_scores(tmp_path):
    TASK.write_demo(tmp_path, num_train=6, num_eval=4, seed=5)
    sizes = {role: len(TASK.examples(tmp_path, role)) for role in ("train", "minival", "eval", "test")}
    assert sizes == {"train": 6, "minival": 4, "eval": 4, "test": 4}
    refs = TASK.references(tmp_path, "eval")
    examples = {e.id: e for e in TASK.examples(tmp_path, "eval")}
    for study, ex in examples.items():
        report = next(tmp_path.glob(f"files/p*/p*/s{study}.txt")).read_text()
        sections = parse_sections(report)
        assert ex.prefix == sections["indication"] and ex.prefix
        assert ex.reference == " ".join(s for s in (sections["findings"], sections["impression"]) if s)
    scores = TASK.score(dict(refs), refs)  # ground truth back: perfect
    assert scores.metrics["bleu4"] == pytest.approx(1.0) and scores.metrics["rouge_l"] == 1.0
    assert {k: v for k, v in scores.metrics.items() if k.startswith("radgraph")} == {
        "radgraph_simple": 1.0, "radgraph_partial": 1.0, "radgraph_complete": 1.0}
    assert scores.extra["radgraph_annotator"].startswith("lexicon")


def test_demo_is_deterministic_and_varies_with_the_seed(tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        TASK.write_demo(tmp_path / name, num_train=3, num_eval=1, seed=seed)
    files = lambda name: {p.relative_to(tmp_path / name): p.read_bytes()  # noqa: E731
                          for p in sorted((tmp_path / name).rglob("*")) if p.is_file()}
    assert files("a") == files("b") != files("c")
    assert len(files("a")) >= 2 + 5 * 2  # two CSVs, and a report and at least one image per study


def test_damaged_report_hand_computed(tmp_path):
    write_raw(tmp_path, STUDIES)
    refs = TASK.references(tmp_path, "train")
    preds = {"50000001": TASK.parse("There is a small left pleural effusion.\n"),  # no impression
             "50000002": TASK.parse(None)}  # not text: a miss, never a crash
    scores = TASK.score(preds, refs)
    assert (scores.num_unparsable, scores.num_examples) == (1, 2)
    a = scores.extra["per_example"]["50000001"]
    # PTB tokens: the prediction's 7 words are the first 7 of the reference's 9.
    r = 7 / 9
    assert a["rouge_l"] == pytest.approx(2.44 * r / (r + 1.44))
    assert a["bleu4"] == pytest.approx(math.exp(1 - 9 / 7))
    # Lexicon items: reference {small->effusion, left pleural, effusion@left pleural, Mild->
    # cardiomegaly, cardiomegaly}; the prediction has the first 3: P 1, R 3/5, F1 0.75 at each level.
    assert (a["radgraph_simple"], a["radgraph_partial"], a["radgraph_complete"]) == \
        pytest.approx((0.75, 0.75, 0.75))
    assert scores.metrics["radgraph_partial"] == pytest.approx(0.75 / 2)


def test_missing_manual_dir_shows_download_instructions(tmp_path):
    with pytest.raises(DataError, match="mimic-cxr-2.0.0-split.csv"):
        TASK.examples(tmp_path / "nowhere", "train")


def test_malformed_csv_line_names_file_and_line(tmp_path):
    write_raw(tmp_path, STUDIES, gz=False)
    path = tmp_path / "mimic-cxr-2.0.0-split.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3] + ",extra"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"mimic-cxr-2.0.0-split.csv:4: expected 4 fields"):
        TASK.prepare(tmp_path)
    lines[3] = "pa-2,50000002,10000002,training"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"split.csv:4: .*split in \('train', 'validate', 'test'\)"):
        TASK.prepare(tmp_path)


def test_no_usable_study_is_an_error_naming_the_paths(tmp_path):
    write_raw(tmp_path, [("50000009", "10000009", "train", None, [("x", "PA", True)])])
    with pytest.raises(DataError, match=r"p10/p10000009/s50000009.txt"):
        TASK.prepare(tmp_path)


def test_recipe_and_annotator_choice(tmp_path, monkeypatch, caplog):
    r = get_task("mimic_cxr").recipe("3b", 448)
    assert (r.epochs, r.lr, r.label_smoothing, r.dropout, r.weight_decay, r.decode) == \
        (8, 5e-6, 0.0, 0.0, 0.0, "greedy")
    assert (r.text_len, r.max_decode_len) == (256, 256)
    # nano-l at 128 px stands for 28b at 896 px: the same recipe, re-swept at its own resolution.
    assert TASK.recipe("nano-l", 128) == r.replace(sweep_resolution=128)
    monkeypatch.setattr(radgraph, "radgraph_model_dir", lambda *a, **k: tmp_path / "radgraph")
    with pytest.raises(RadGraphUnavailable, match="never downloads"):  # weights absent: no fetch
        MimicCxr(annotator="model").annotator()
    assert isinstance(MimicCxr().annotator(), radgraph.LexiconAnnotator)  # "auto" falls back ...
    assert "lexicon annotator" in caplog.text  # ... and says so
    with pytest.raises(ValueError, match="annotator must be"):
        MimicCxr(annotator="spacy").annotator()
