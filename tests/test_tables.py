"""Tables from hand-written records: exact Markdown cells, mean ± std, lr pick, sensitivity labels; the grid's
records and no other; files any reader opens as they are."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

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
    assert "0 records." in md and (tmp_path / "tables" / "sensitivity.png").is_file()


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


# --- the grid's records, and no other --------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """What a grid's cell tells the tables (harness' Cell has these fields)."""

    task: str
    size: str
    resolution: int
    lr: float
    seed: int
    phase: str
    tag: str = "a"

    @property
    def cell_id(self) -> str:
        return rec(self.task, self.size, self.resolution, 0.0, seed=self.seed, lr=self.lr, phase=self.phase,
                   tag=self.tag).cell_id


@pytest.mark.parametrize("config_a,config_b", [
    ({"checkpoint": "ck-3b-224.npz", "checkpoint_fingerprint": "v1"},
     {"checkpoint": "ck-3b-224.npz", "checkpoint_fingerprint": "v2"}),  # base checkpoint replaced, then put back
    ({"overrides": {"steps": 6}}, {"overrides": {"steps": 12}}),  # override steps: 6 -> 12 -> 6
])
def test_a_reverted_configuration_shows_the_grids_records_not_the_newer_ones(tmp_path, config_a, config_b):
    """Two configurations of one (task, size, res, lr, seed) with different ids; the grid is back on the
    older one, whose records exist (so `run` reran nothing). The tables show the grid's numbers and list
    the newer configuration's records apart."""
    def write(tag, score, created, config):
        for seed, off in enumerate(OFFSETS):
            r = rec("vqav2", "3b", 224, score + off, seed=seed, tag=tag, created=created)
            write_record(tmp_path, Record(**{**r.to_json(), "config": config}))
            yield r.cell_id

    grid = list(write("a", 0.50, "2025-01-01T00:00:00+00:00", config_a))
    other = list(write("b", 0.70, "2025-02-01T00:00:00+00:00", config_b))
    md = write_tables(tmp_path, cell_ids=grid)
    assert "| vqav2 | accuracy | 50.0 ± 0.2 |" in md and "70.0" not in md.split("## Other records")[0]
    assert "superseded" not in md and "3 records of the grid's 3 cells." in md and "No record yet" not in md
    assert "3 other record(s) in this workdir are not cells of this grid" in md
    listed = md.split("## Other records (not in the tables)")[1]
    assert all(f"| {cell_id} | final | vqav2 | 3b | 224 |" in listed for cell_id in other)
    table13 = pd.read_csv(tmp_path / "tables" / "table13.csv")
    assert table13["mean"].tolist() == pytest.approx([50.0]) and table13["n"].tolist() == [3]
    others = pd.read_csv(tmp_path / "tables" / "other_records.csv")
    assert sorted(others["cell_id"]) == sorted(other) and others["score"].tolist() == pytest.approx([69.8, 70.0, 70.2])
    # Without ids (a workdir whose grid is unknown) the old rule applies: the newest record wins.
    assert "| vqav2 | accuracy | 70.0 ± 0.2 |" in write_tables(tmp_path, tmp_path / "all")
    assert not (tmp_path / "all" / "other_records.csv").exists()


def test_a_grid_cell_without_a_record_is_shown_missing(workdir):
    cells = [Cell(task, size, res, 1e-6, seed, "final") for task, (_, by_cell) in FINAL.items()
             for size, res in by_cell for seed in range(3)]
    cells += [Cell("vqav2", "10b", 448, 1e-6, seed, "final") for seed in range(3)]  # not run yet
    cells += [Cell("textvqa", "3b", 224, 1e-6, 0, "final")]  # a task none of whose cells has run
    cells += [Cell("vqav2", size, 224, lr, 0, "sweep") for size, lr in SWEEP]
    cells += [Cell("vqav2", "10b", 224, 1e-5, 0, "sweep")]  # its sweep is not complete: no pick yet
    md = write_tables(workdir, cell_ids=cells)
    assert "No record yet (– in the tables): textvqa-3b-224-final-lr1e-06-s0-a, " in md
    assert "| vqav2 | accuracy | 83.0 ± 0.2 | 84.3 ± 0.2 | 83.1 ± 0.2 | – |" in md
    assert "| textvqa | – | – | – | – | – |" in md
    assert "| vqav2 10b | accuracy | 84.3 | 84.0 | – | – |" in md  # no bold, no pick: as the scheduler
    assert "| vqav2 3b | accuracy | 80.0 | **82.7** | 82.7 | 3e-06 |" in md
    assert "pubtabnet" in md.split("## Other records")[1] and "| pubtabnet |" not in md.split("## Other")[0]
    table13 = pd.read_csv(workdir / "tables" / "table13.csv").set_index(["task", "size", "resolution"])
    assert table13.loc[("vqav2", "10b", 448), "n"] == 0 and pd.isna(table13.loc[("vqav2", "10b", 448), "mean"])
    assert table13.loc[("textvqa", "3b", 224), "n"] == 0


CSV_COLUMNS = {
    "table13.csv": ["task", "size", "resolution", "mean", "std", "n", "metric"],
    "lr_sweep.csv": ["task", "size", "lr", "metric", "score", "best"],
    "sensitivity.csv": ["task", "metric", "base", "res_gain", "res_se", "size_gain", "size_se", "base_std", "seeds",
                        "label"],
    "versus.csv": ["task", "size", "resolution", "metric", "score", "baseline", "diff"],
    "other_records.csv": ["cell_id", "phase", "task", "size", "resolution", "lr", "seed", "split", "metric",
                          "score", "created"],
}


@pytest.mark.parametrize("demo", [False, True])
def test_every_csv_reads_with_plain_read_csv(tmp_path, demo):
    """pandas.read_csv with no options: the header is the first line, every row has its columns."""
    for task, (headline, cells) in FINAL.items():
        for (size, res), mean in cells.items():
            for seed, off in enumerate(OFFSETS):
                write_record(tmp_path / "w", rec(task, size, res, mean + off, seed=seed, headline=headline, demo=demo))
                write_record(tmp_path / "b", rec(task, size, res, mean, seed=seed, headline=headline, demo=demo))
    for (size, lr), score in SWEEP.items():
        write_record(tmp_path / "w", rec("vqav2", size, 224, score, lr=lr, phase="sweep", demo=demo))
    write_record(tmp_path / "w", rec("vqav2", "3b", 224, 0.1, tag="old", demo=demo))  # not the grid's
    ids = [p.stem for p in (tmp_path / "w" / "records").glob("*.json") if not p.stem.endswith("-old")]
    write_tables(tmp_path / "w", tmp_path / "out", baseline=tmp_path / "b", cell_ids=ids)
    written = sorted(p.name for p in (tmp_path / "out").glob("*.csv"))
    assert written == sorted(CSV_COLUMNS)
    for name in written:
        frame = pd.read_csv(tmp_path / "out" / name)
        assert list(frame.columns) == CSV_COLUMNS[name] + (["scale"] if demo else []), name
        assert len(frame) > 0 and not frame[CSV_COLUMNS[name][0]].isna().any(), name
        if demo:
            assert set(frame["scale"]) == {"demo scale"}, name
    assert pd.read_csv(tmp_path / "out" / "other_records.csv")["cell_id"].tolist() == [
        "vqav2-3b-224-final-lr1e-06-s0-old"]


def test_one_seed_plot_promises_no_error_bars_and_no_sweep_writes_no_sweep_plot(tmp_path):
    for task, (headline, cells) in FINAL.items():
        for (size, res), mean in cells.items():
            write_record(tmp_path, rec(task, size, res, mean, headline=headline))
    out = tmp_path / "tables"
    (out).mkdir()
    (out / "lr_sweep.png").write_bytes(b"an old grid's plot")
    md = write_tables(tmp_path)
    title = Image.open(out / "sensitivity.png").text["Title"]
    assert title == "Resolution vs size sensitivity (one seed: no error bars)"
    assert not (out / "lr_sweep.png").exists() and "Plots beside this file: sensitivity.png." in md
    for seed, off in enumerate(OFFSETS[1:], 1):  # three seeds of every cell
        for task, (headline, cells) in FINAL.items():
            for (size, res), mean in cells.items():
                write_record(tmp_path, rec(task, size, res, mean + off, seed=seed, headline=headline))
    write_tables(tmp_path)
    assert Image.open(out / "sensitivity.png").text["Title"] == "Resolution vs size sensitivity (error bars: 2 se)"


def test_plot_titles_fit_the_figure(tmp_path, monkeypatch):
    """A one-panel sweep plot is 4.2 inches wide: its demo title is wrapped, not cut off at the edges."""
    from results import plots

    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    sweep = pd.DataFrame([{"task": "vqav2", "size": "3b", "lr": lr, "metric": "accuracy", "score": s,
                           "best": False} for (_, lr), s in SWEEP.items() if _ == "3b"])
    plots.lr_sweep_curves(sweep, {}, tmp_path / "lr_sweep.png", demo=True)
    plots.gains_scatter([], tmp_path / "sensitivity.png", demo=True)
    plots.versus_bars(pd.DataFrame(columns=["task", "size", "resolution", "diff"]), "a-baseline-workdir-name",
                      tmp_path / "versus.png", [], demo=True)
    for fig in figures:
        renderer = fig.canvas.get_renderer()
        titles = [fig._suptitle] if fig._suptitle is not None else [ax.title for ax in fig.axes]
        for title in titles:
            box, frame = title.get_window_extent(renderer), fig.bbox
            assert title.get_text() and frame.x0 <= box.x0 and box.x1 <= frame.x1 and box.y1 <= frame.y1, (
                title.get_text())


def test_a_read_only_workdir_is_tabled_elsewhere(workdir, monkeypatch, capsys):
    """A finished workdir on a read-only mount: the tables go to a temp folder named on stderr (or --out)."""
    from results import tables

    def read_only(folder):
        raise PermissionError(13, "Permission denied", str(folder))

    for path in [workdir, *workdir.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    if os.geteuid() == 0:  # root writes through file modes: make the probe fail as a read-only mount would
        monkeypatch.setattr(tables, "_check_writable", read_only)
    try:
        md = write_tables(workdir)
    finally:
        for path in [workdir, *workdir.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    err = capsys.readouterr().err
    assert "| vqav2 | accuracy | 83.0 ± 0.2 |" in md and f"cannot write {workdir / 'tables'}" in err
    folder = Path(err.split("tables written to ")[1].split(" instead")[0])
    assert (folder / "tables.md").read_text() == md and (folder / "table13.csv").is_file()
    assert workdir not in folder.parents

