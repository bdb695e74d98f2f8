"""Tables from hand-written records: exact Markdown cells, mean ± std, lr pick, sensitivity labels."""

from __future__ import annotations

import json

import pytest

from results.store import Record, RecordError, load_records, write_record
from results.tables import DEMO_BANNER, write_tables

OFFSETS = (-0.002, 0.0, 0.002)  # three seeds: sample std 0.2 points


def rec(task, size, res, score, *, seed=0, lr=1e-6, phase="final", headline="accuracy", demo=False,
        created="2025-01-01T00:00:00+00:00", tag="a"):
    cell_id = f"{task}-{size}-{res}-{phase}-lr{lr:.0e}-s{seed}-{tag}"
    return Record(cell_id=cell_id, task=task, size=size, resolution=res, lr=lr, seed=seed, phase=phase,
                  split="eval" if phase == "final" else "minival", metrics={headline: score, "other": 0.0},
                  headline=headline, steps=10, wall_time_s=1.0, config_hash=tag, config={}, versions={},
                  created=created, demo=demo)


FINAL = {  # task: (headline, {(size, res): mean score as a fraction})
    "vqav2": ("accuracy", {("3b", 224): 0.830, ("10b", 224): 0.843, ("3b", 448): 0.831}),
    "docvqa": ("anls", {("3b", 224): 0.400, ("10b", 224): 0.440, ("3b", 448): 0.736, ("10b", 448): 0.766}),
    "coco_captions": ("cider", {("3b", 224): 1.413, ("10b", 224): 1.437, ("3b", 448): 1.434, ("10b", 448): 1.450}),
    "chemdraw": ("exact_match", {("3b", 224): 0.500, ("10b", 224): 0.499, ("3b", 448): 0.501}),
}
SWEEP = {("3b", 1e-6): 0.800, ("3b", 3e-6): 0.827, ("3b", 1e-5): 0.827, ("10b", 1e-6): 0.843, ("10b", 3e-6): 0.840}


@pytest.fixture
def workdir(tmp_path):
    for task, (headline, cells) in FINAL.items():
        for (size, res), mean in cells.items():
            for seed, off in enumerate(OFFSETS):
                write_record(tmp_path, rec(task, size, res, mean + off, seed=seed, headline=headline))
    write_record(tmp_path, rec("pubtabnet", "3b", 224, 0.9, headline="teds"))  # one seed, one cell
    for (size, lr), score in SWEEP.items():
        write_record(tmp_path, rec("vqav2", size, 224, score, lr=lr, phase="sweep"))
    return tmp_path


def test_table13_mean_std_and_missing_cells(workdir):
    md = write_tables(workdir)
    assert DEMO_BANNER not in md
    assert "| task | metric | 3b-224 | 10b-224 | 3b-448 | 10b-448 |" in md
    assert "| vqav2 | accuracy | 83.0 ± 0.2 | 84.3 ± 0.2 | 83.1 ± 0.2 | – |" in md
    assert "| docvqa | anls | 40.0 ± 0.2 | 44.0 ± 0.2 | 73.6 ± 0.2 | 76.6 ± 0.2 |" in md
    assert "| coco_captions | cider | 141.3 ± 0.2 | 143.7 ± 0.2 | 143.4 ± 0.2 | 145.0 ± 0.2 |" in md
    assert "| pubtabnet | teds | 90.0 (n=1) | – | – | – |" in md


def test_lr_sweep_table_marks_the_protocols_pick(workdir):
    md = write_tables(workdir)
    assert "| task size | metric | 1e-06 | 3e-06 | 1e-05 | best lr |" in md
    assert "| vqav2 3b | accuracy | 80.0 | **82.7** | 82.7 | 3e-06 |" in md  # a tie goes to the smaller lr
    assert "| vqav2 10b | accuracy | **84.3** | 84.0 | – | 1e-06 |" in md


def test_sensitivity_labels(workdir):
    md = write_tables(workdir)
    assert "| task | metric | 3b-224 | res gain 224→448 @3b | size gain 3b→10b @224 | label |" in md
    # Three seeds, sample std 0.2 per cell: 2 se of a difference = 2 * sqrt(2 * 0.04 / 3) = 0.33.
    assert ("| vqav2 | accuracy | 83.0 ± 0.2 | +0.1 (2se 0.3, within noise) | +1.3 (2se 0.3) | size |"
            in md)
    assert "| docvqa | anls | 40.0 ± 0.2 | +33.6 (2se 0.3) | +4.0 (2se 0.3) | resolution |" in md
    assert "| coco_captions | cider | 141.3 ± 0.2 | +2.1 (2se 0.3) | +2.4 (2se 0.3) | both |" in md
    assert ("| chemdraw | exact_match | 50.0 ± 0.2 | +0.1 (2se 0.3, within noise) | -0.1 (2se 0.3, within noise) "
            "| neither |" in md)
    assert "| pubtabnet | teds | 90.0 | – | – | – |" in md
    assert "twice" in md and "1 seed" in md  # the rule is written under the table


def test_one_seed_has_no_interval_and_nothing_is_significant(tmp_path):
    """With one seed there is no noise estimate: a gain is shown with "1 seed", never called significant,
    and the label says "1 seed" (not "2se 0.0" and a label that reads any positive gain as a finding)."""
    from results.sensitivity import Gain

    for task, (headline, cells) in FINAL.items():
        for (size, res), mean in cells.items():
            write_record(tmp_path, rec(task, size, res, mean, headline=headline))
    write_tables(tmp_path, tmp_path / "out")
    md = (tmp_path / "out" / "tables.md").read_text()
    assert "| docvqa | anls | 40.0 | +33.6 (1 seed) | +4.0 (1 seed) | 1 seed |" in md
    assert "2se" not in md.split("## Resolution vs size sensitivity")[1].split("\n\n")[1]
    csv = (tmp_path / "out" / "sensitivity.csv").read_text().splitlines()
    assert csv[0].endswith(",seeds,label") and all(line.endswith(",1,1 seed") for line in csv[1:]
                                                   if not line.startswith("pubtabnet"))
    assert not Gain(33.6, 0.0, seeds=1).significant and Gain(33.6, 0.1, seeds=3).significant


def test_files_csv_latex_png(workdir):
    write_tables(workdir, workdir / "out")
    out = workdir / "out"
    for name in ("tables.md", "table13.csv", "table13.tex", "lr_sweep.csv", "lr_sweep.tex",
                 "sensitivity.csv", "sensitivity.tex", "sensitivity.png", "lr_sweep.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    tex = (out / "lr_sweep.tex").read_text()
    assert r"vqav2 3b & accuracy & 80.0 & \textbf{82.7} & 82.7 & 3e-06 \\" in tex
    assert r"83.0 $\pm$ 0.2" in (out / "table13.tex").read_text()
    csv = (out / "table13.csv").read_text().splitlines()
    assert csv[0] == "task,size,resolution,mean,std,n,metric" and len(csv) == 1 + 15
    sens = {line.split(",")[0]: line.split(",")[-1] for line in (out / "sensitivity.csv").read_text().splitlines()}
    assert sens["docvqa"] == "resolution" and sens["vqav2"] == "size"


def test_demo_banner_and_newest_record_wins(tmp_path):
    write_record(tmp_path, rec("vqav2", "3b", 224, 0.5, demo=True))
    write_record(tmp_path, rec("vqav2", "3b", 224, 0.6, demo=True, tag="b", created="2025-02-01T00:00:00+00:00"))
    md = write_tables(tmp_path)
    assert md.startswith(DEMO_BANNER)
    assert "| vqav2 | accuracy | 60.0 |" in md and "1 older record(s)" in md


def test_no_records_does_not_crash(tmp_path):
    md = write_tables(tmp_path)
    assert "0 records." in md and (tmp_path / "tables" / "lr_sweep.png").is_file()


def test_corrupt_record_names_the_file(workdir):
    bad = workdir / "records" / "broken.json"
    bad.write_text('{"cell_id": "x", ')
    with pytest.raises(RecordError, match=f"{bad}:1:.*corrupt record"):
        write_tables(workdir)
    bad.write_text(json.dumps({"cell_id": "x"}))
    with pytest.raises(RecordError, match=f"{bad}: corrupt record .missing field.*task"):
        load_records(workdir)


def test_against_a_baseline_workdir(workdir, tmp_path_factory):
    base = tmp_path_factory.mktemp("random-init")
    for task, (headline, cells) in FINAL.items():
        for (size, res), mean in cells.items():
            # The baseline loses every vqav2 cell by 10 points, wins every docvqa cell by 1, ties the rest.
            delta = {"vqav2": -0.10, "docvqa": 0.01}.get(task, 0.0)
            for seed, off in enumerate(OFFSETS):
                write_record(base, rec(task, size, res, mean + off + delta, seed=seed, headline=headline))
    md = write_tables(workdir, baseline=base)
    assert f"## Against {base.name}" in md
    assert "| task | 3b-224 | 10b-224 | 3b-448 | 10b-448 | mean diff | cells won |" in md
    assert "| vqav2 | 83.0 / 73.0 | 84.3 / 74.3 | 83.1 / 73.1 | – | +10.0 | 3/3 |" in md
    assert "| docvqa | 40.0 / 41.0 | 44.0 / 45.0 | 73.6 / 74.6 | 76.6 / 77.6 | -1.0 | 0/4 |" in md
    assert "| chemdraw | 50.0 / 50.0 | 49.9 / 49.9 | 50.1 / 50.1 | – | +0.0 | 0/3 |" in md
    assert "wins 1 of 4 tasks" in md  # pubtabnet has no baseline cell, so 4 tasks are compared
    assert {"versus.csv", "versus.tex", "versus.png"} <= {p.name for p in (workdir / "tables").iterdir()}


def test_a_fall_beyond_its_noise_is_marked_a_drop():
    """A negative gain larger than 2 se is neither noise nor a finding the label counts: it says so."""
    from results.sensitivity import Gain, Sensitivity
    from results.tables import sensitivity_table

    sens = [Sensitivity("mimic_cxr", "radgraph_partial", 47.0, 1.5, resolution=Gain(-5.0, 1.0, seeds=3),
                        size=Gain(-1.0, 1.0, seeds=3))]
    row = sensitivity_table(sens, ["nano-s", "nano-m"], [32, 64]).loc["mimic_cxr"]
    assert list(row)[2:] == ["-5.0 (2se 2.0, a drop)", "-1.0 (2se 2.0, within noise)", "neither"]
    assert Gain(-5.0, 1.0, seeds=3).drop and not Gain(-5.0, 1.0, seeds=1).drop
