"""Every output of a demo grid says "demo scale" (Markdown banner, a last CSV column, LaTeX caption, PNG title
and metadata); a non-demo grid's outputs do not, and the demo CSVs hold the same data beside that column."""

import pandas as pd
from PIL import Image

from results.store import write_record
from results.tables import write_tables
from tests.test_tables import FINAL, OFFSETS, SWEEP, rec


def _workdir(path, demo: bool):
    for task, (headline, cells) in FINAL.items():
        for (size, res), mean in cells.items():
            for seed, off in enumerate(OFFSETS):
                write_record(path, rec(task, size, res, mean + off, seed=seed, headline=headline, demo=demo))
    for (size, lr), score in SWEEP.items():
        write_record(path, rec("vqav2", size, 224, score, lr=lr, phase="sweep", demo=demo))
    return path


def test_every_demo_output_says_so(tmp_path):
    demo, real = _workdir(tmp_path / "demo", True), _workdir(tmp_path / "real", False)
    write_tables(demo, baseline=real)
    write_tables(real, baseline=demo)
    files = sorted(p.name for p in (demo / "tables").iterdir())
    assert {"table13.csv", "lr_sweep.csv", "sensitivity.csv", "versus.csv", "table13.tex", "lr_sweep.tex",
            "sensitivity.tex", "versus.tex", "sensitivity.png", "lr_sweep.png", "versus.png", "tables.md"} <= set(files)
    for name in files:
        path, twin = demo / "tables" / name, real / "tables" / name
        if name.endswith(".csv"):
            frame = pd.read_csv(path)  # plain read_csv: no comment line to skip
            assert list(frame.columns)[-1] == "scale" and set(frame["scale"]) <= {"demo scale"}, name
            assert "demo scale" not in twin.read_text() and "scale" not in pd.read_csv(twin).columns
            pd.testing.assert_frame_equal(frame.drop(columns="scale"), pd.read_csv(twin))
        elif name.endswith(".tex"):
            assert r"\caption{Demo scale (tiny models on generated data" in path.read_text(), name
            assert "demo scale" not in twin.read_text().lower()
        elif name.endswith(".png"):
            meta, twin_meta = Image.open(path).text, Image.open(twin).text
            assert meta["Title"].startswith("[demo scale] ") and "demo scale" in meta["Description"], name
            assert not twin_meta["Title"].startswith("[demo scale]") and "Description" not in twin_meta
        elif name.endswith(".md"):
            assert "demo scale" in path.read_text().lower() and "demo scale" not in twin.read_text().lower()
