"""The one table writer (results/tabular.py: tabulate and pandas' Styler) reproduces, byte for byte, every
table the hand-written renderers wrote (tests/golden/tables, made from a fake-runner grid before the move)."""

import pandas as pd
import pytest

from results.tabular import fixed_width, latex, markdown, markdown_rows
from tests.helpers.golden_tables import GOLDEN, render


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return render(tmp_path_factory.mktemp("golden") / "run")


def test_every_golden_file_is_reproduced_byte_for_byte(rendered):
    golden = {p.name: p.read_text(encoding="utf-8") for p in GOLDEN.iterdir()}
    assert set(rendered) == set(golden)
    for name, text in golden.items():
        assert rendered[name] == text, name


def test_edge_cases_keep_the_old_forms():
    empty = pd.DataFrame(columns=["metric", "1e-03"])
    assert markdown(empty, "task size") == "| task size | metric | 1e-03 |\n|---|---|---|"
    assert latex(empty, "task", "c").splitlines()[4:8] == [r"\toprule", r"task & metric & 1e-03 \\",
                                                         r"\midrule", r"\bottomrule"]
    assert markdown_rows([]) == "(none)"
    assert markdown_rows([{"a": None, "b": 0.1}, {"a": True}]) == "| a | b |\n|---|---|\n| None | 0.1 |\n| True |  |"
    assert fixed_width(["x", "long header"], [["wide value", "1"]]) == (
        "x           long header\n----------  -----------\nwide value  1")
    df = pd.DataFrame({"v": ["1", "2"]}, index=["a_b", "c"])
    assert latex(df, "k", "50% ~ ^", bold={("a_b", "v")}).splitlines()[2:9] == [
        r"\caption{50\% \textasciitilde{} \textasciicircum{}}", r"\begin{tabular}{lr}", r"\toprule",
        r"k & v \\", r"\midrule", r"a\_b & \textbf{1} \\", r"c & 2 \\"]


def test_demo_grid_outputs_are_the_old_ones_plus_the_demo_scale_labels(tmp_path):
    """The same grid with `demo: true`: Markdown and the plan are byte-identical to the old renderers'; each
    CSV gains a last column `scale` ("demo scale" in every row) and each LaTeX caption one leading sentence
    (tests/test_outputs_say_demo_scale.py), nothing else."""
    from results.tables import DEMO_DETAIL
    from tests.helpers.golden_tables import GOLDEN_DEMO

    rendered = render(tmp_path / "run", demo=True)
    golden = {p.name: p.read_text(encoding="utf-8") for p in GOLDEN_DEMO.iterdir()}
    assert set(rendered) == set(golden)
    for name, old in golden.items():
        if name.endswith(".csv"):
            header, *rows = old.splitlines()
            old = "".join(line + "\n" for line in [header + ",scale", *(row + ",demo scale" for row in rows)])
        elif name.endswith(".tex"):
            old = old.replace(r"\caption{", r"\caption{Demo scale (" + DEMO_DETAIL.replace("%", r"\%") + "). ", 1)
        assert rendered[name] == old, name
    assert golden["tables.md"].startswith("> **Demo scale.**") and "[demo scale]" in golden["plan_before.txt"]
