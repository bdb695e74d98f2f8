"""The project's one table writer: Markdown and fixed-width text through tabulate, LaTeX through pandas' Styler.

Every table (results/tables.py's paper tables, the scheduler's dry-run plan, the CLI's task listings) is a
DataFrame of strings rendered here. The formats are the ones the tests and tests/golden/tables pin:

- Markdown: GitHub pipes without padding (`| a | b |`, then `|---|---|`), which diffs and greps well;
  tabulate's own pipe/github formats pad every cell to its column's width, so a TableFormat of our own
  (tabulate's documented extension point) with alignment off (stralign=None) writes the unpadded form.
- Fixed width: tabulate's "plain" format (left-aligned columns two spaces apart), a dashed rule under
  the header, no trailing spaces.
- LaTeX: booktabs table[t], centred, caption first; cells escaped by `tex` (pandas' escape="latex" writes
  `\\textasciitilde ` where we write `\\textasciitilde{}`, and leaves ±, – and → for the font to fail on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from tabulate import DataRow, TableFormat, tabulate

MARKDOWN = TableFormat(
    lineabove=None, linebelowheader=lambda widths, _aligns: "|" + "|".join("---" for _ in widths) + "|",
    linebetweenrows=None, linebelow=None, headerrow=DataRow("| ", " | ", " |"),
    datarow=DataRow("| ", " | ", " |"), padding=0, with_header_hide=None)

LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                 "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                 "±": r"$\pm$", "–": "--", "→": r"$\to$"}


def tex(value: object) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in str(value))


def _strings(df: pd.DataFrame, index_name: str | None, bold: Iterable[tuple[Any, Any]] = (),
             mark: str = "**{}**") -> pd.DataFrame:
    """The frame as strings, its index (when named) a first column, cells in `bold` (index, column) marked."""
    bold = set(bold)
    out = pd.DataFrame({col: [mark.format(v) if (label, col) in bold else str(v)
                              for label, v in df[col].items()] for col in df.columns},
                       index=df.index, columns=df.columns)
    if index_name is not None:
        out.insert(0, index_name, [str(label) for label in df.index])
    return out.reset_index(drop=True)


def markdown(df: pd.DataFrame, index_name: str | None = None, bold: Iterable[tuple[Any, Any]] = ()) -> str:
    """`df` as an unpadded Markdown table; with `index_name`, the index is the first column under that
    name; `bold` lists (index label, column) pairs to show in bold."""
    table = _strings(df, index_name, bold)
    return tabulate(table.values.tolist(), headers=list(table.columns), tablefmt=MARKDOWN, stralign=None,
                    disable_numparse=True)


def markdown_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """Dicts sharing the first one's keys as a Markdown table; "(none)" for no rows. Each value prints as
    itself (an object frame: a column mixing ints and None would otherwise turn into floats and `nan`)."""
    if not rows:
        return "(none)"
    return markdown(pd.DataFrame([{c: r.get(c, "") for c in rows[0]} for r in rows], columns=list(rows[0]),
                                 dtype=object))


def fixed_width(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart under a dashed rule, each line without trailing spaces."""
    # tabulate widens a column by 2 when its header is its widest cell, so the header and the rule go
    # in as rows of tabulate's "plain" format (columns two spaces apart).
    rows = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    rule = ["-" * max(len(row[i]) for row in rows) for i in range(len(header))]
    text = tabulate([rows[0], rule, *rows[1:]], tablefmt="plain", stralign="left", disable_numparse=True)
    return "\n".join(line.rstrip() for line in text.split("\n"))


def latex(df: pd.DataFrame, index_name: str, caption: str, bold: Iterable[tuple[Any, Any]] = ()) -> str:
    """`df` as a booktabs LaTeX table (index first, named `index_name`), `bold` cells in \\textbf."""
    bold = set(bold)
    table = _strings(df, index_name)
    labels = list(df.index)

    def weight(column: pd.Series) -> list[str]:
        return ["textbf:--rwrap;" if (labels[i], column.name) in bold else "" for i in range(len(column))]

    styler = table.style.hide(axis="index").format(tex).format_index(tex, axis=1).apply(weight, axis=0)
    return styler.to_latex(environment="table", position="t", position_float="centering", hrules=True,
                           caption=tex(caption), column_format="l" + "r" * len(df.columns))
