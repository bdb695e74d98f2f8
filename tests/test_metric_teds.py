"""TEDS / S-TEDS: hand-computed values, the same floats as the plain apted transcription of the official
code (tests/reference/teds_reference.py) on tables, and the Zhang-Shasha distance against a brute-force
definition of the tree edit distance on random trees."""

import functools
import random

import numpy as np
import pytest
from apted import APTED
from lxml import etree

from metrics.teds import corpus_teds, parse_table, table_tree, teds, tree_edit_distance
from tasks.demo import pubtabnet as demo
from tasks.pubtabnet import gt_html
from tests.reference import teds_reference as reference


def doc(inner: str) -> str:
    return f"<html><body><table>{inner}</table></body></html>"


# 8 elements under <table>: thead, tr, td, td, tbody, tr, td, td.
GT = doc("<thead><tr><td>Age</td><td>Sex</td></tr></thead><tbody><tr><td>12</td><td>M</td></tr></tbody>")

HAND_COMPUTED = [
    ("identical", GT, 1.0, 1.0),
    # "12" -> "13": one rename of cost lev/len = 1/2.
    ("typo", GT.replace("12", "13"), 1 - 0.5 / 8, 1.0),
    # The last cell deleted: one deletion.
    ("missing cell", GT.replace("<td>M</td>", ""), 1 - 1 / 8, 1 - 1 / 8),
    # An empty cell where "M" was: rename cost 1/1.
    ("emptied cell", GT.replace("<td>M</td>", "<td></td>"), 1 - 1 / 8, 1.0),
    # <th> is an ordinary node, not a cell: each header cell costs a rename.
    ("th header", GT.replace("<td>Age</td><td>Sex</td>", "<th>Age</th><th>Sex</th>"), 1 - 2 / 8, 1 - 2 / 8),
    # Attributes other than spans are ignored (PaliGemma 2's coords).
    ("coords", GT.replace("<td>12</td>", '<td coords="&lt;loc0001&gt;">12</td>'), 1.0, 1.0),
]


@pytest.mark.parametrize("name,pred,expected,expected_structure", HAND_COMPUTED,
                         ids=[c[0] for c in HAND_COMPUTED])
def test_hand_computed(name, pred, expected, expected_structure):
    assert teds(pred, GT) == pytest.approx(expected, abs=1e-15)
    assert teds(pred, GT, structure_only=True) == pytest.approx(expected_structure, abs=1e-15)


def test_inline_tags_count_in_the_denominator():
    # GT <b>Age</b> adds a 9th element; its tokens <b> A g e </b> vs A g e: 2 edits over 5.
    bold = GT.replace("<td>Age</td>", "<td><b>Age</b></td>")
    assert teds(GT, bold) == pytest.approx(1 - 0.4 / 9, abs=1e-15)
    assert teds(GT, bold, structure_only=True) == pytest.approx(1.0)


def test_spans():
    merged = doc('<tbody><tr><td colspan="2">Total</td></tr></tbody>')  # 3 elements
    split = doc("<tbody><tr><td>Total</td><td></td></tr></tbody>")  # 4 elements
    # Best script: rename the spanning cell (spans differ: 1) and insert one cell: 2 / max(3, 4).
    assert teds(split, merged) == pytest.approx(0.5) == teds(split, merged, structure_only=True)


def test_bare_tables_and_unreadable_documents_score_zero():
    bare = "<table><tr><td>1</td></tr></table>"
    assert teds(bare, bare) == 0.0 and teds(GT, bare) == 0.0
    for bad in ("", "no table here", GT.replace("<td>12</td>", '<td colspan="two">12</td>'), "\x00" + GT):
        assert teds(bad, GT) == 0.0 and parse_table(bad) is None
    result = corpus_teds({"a": GT, "b": "<p>oops</p>"}, {"a": GT, "b": GT, "c": GT})
    assert result.scores == {"a": 1.0, "b": 0.0, "c": 0.0} and result.unparsable == ["b", "c"]
    assert result.mean == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="reference 'x' has no readable body/table"):
        corpus_teds({}, {"x": "<table></table>"})


PARITY = [
    GT,
    GT.replace("12", "13").replace("Sex", "Sx"),
    GT.replace("<tr><td>12</td><td>M</td></tr>", ""),
    GT.replace("<td>Age</td>", '<td rowspan="2">Age</td>'),
    GT.replace("<thead>", "").replace("</thead>", ""),
    GT.replace("<td>Age</td><td>Sex</td>", "<th>Age</th><th>Sex</th>"),
    GT.replace("<td>M</td>", "<td><b>M</b>ale<i>s</i> x</td>"),
    GT.replace("<td>M</td>", "<td><table><tr><td>nested</td></tr></table></td>"),
    GT.replace("<td>M</td>", "<td><unk>M</unk>?</td><td></td><td></td>"),
    GT.replace("<td>12</td>", "<td>&lt;0.001 &amp; ±</td>"),
    doc("<tr><td>a</td></tr><tr><td>b</td><td>c</td></tr>"),
    doc(""),
    "<table><tr><td>1</td></tr></table>",
    "",
    GT.replace("<td>12</td>", '<td colspan="x">12</td>'),
]


@pytest.mark.parametrize("structure_only", [False, True])
def test_same_floats_as_the_reference_on_hand_written_tables(structure_only):
    for pred in PARITY:
        for true in PARITY:
            assert teds(pred, true, structure_only=structure_only) == \
                reference.teds(pred, true, structure_only), (pred, true)


def _damage(html: str, rng: random.Random) -> str:
    """Errors a model makes: a cell's text edited, a cell or row dropped, spans lost, <th> for <td>."""
    kind = rng.randrange(5)
    if kind == 0:
        cells = html.split("</td>")
        k = rng.randrange(len(cells) - 1)
        cells[k] = cells[k] + rng.choice("0123456789x")
        return "</td>".join(cells)
    if kind == 1:
        return html.replace("<td></td>", "", 1).replace("<td>", "<td>?", 1)
    if kind == 2:
        rows = html.split("<tr>")
        del rows[rng.randrange(1, len(rows))]
        return "<tr>".join(rows)
    if kind == 3:
        return html.replace(' colspan="2"', "").replace(' rowspan="2"', "")
    return html.replace("<td>", "<th>", 2)


def test_same_floats_as_the_reference_on_generated_tables():
    """Damaged copies, and pairs of unrelated tables: there the float sums are long enough that a left-path
    Zhang-Shasha differs from apted in the last bit for about one pair in six; ours matches on all."""
    rng, nrng = random.Random(0), np.random.default_rng(0)
    truths = [gt_html(demo.annotation(t, [None] * len(demo.cells_in_order(t)), "x.png", "val", 0))
              for t in (demo.random_table(nrng) for _ in range(60))]
    for k, true in enumerate(truths):
        pred = truths[k - 1] if k % 2 else _damage(_damage(true, rng), rng)
        assert teds(pred, true) == reference.teds(pred, true), (pred, true)
        if k < 20:
            assert teds(pred, true, structure_only=True) == reference.teds(pred, true, True), (pred, true)


# --- the tree edit distance itself, on random trees --------------------------------------------------
def _random_tree(rng: random.Random, size: int):
    root, inner = etree.Element("table"), []
    inner.append(root)
    for _ in range(size - 1):
        tag = rng.choice(["tr", "tbody", "td", "td", "td"])
        node = etree.SubElement(rng.choice(inner), tag)
        if tag == "td":
            node.text = rng.choice(["", "a", "ab", "abc", "b", "xbc", "12"])
            if rng.random() < 0.2:
                node.set("colspan", "2")
        else:
            inner.append(node)
    return root


def _brute_force(a, b) -> float:
    """Tai's recursion on forests (rightmost roots), memoised: the definition, with no cleverness."""
    rename = reference.TedsConfig().rename

    @functools.cache
    def d(f, g):
        if not f and not g:
            return 0.0
        if not f:
            return d(f, g[:-1] + tuple(g[-1].children)) + 1
        if not g:
            return d(f[:-1] + tuple(f[-1].children), g) + 1
        v, w = f[-1], g[-1]
        return min(d(f[:-1] + tuple(v.children), g) + 1, d(f, g[:-1] + tuple(w.children)) + 1,
                   d(tuple(v.children), tuple(w.children)) + d(f[:-1], g[:-1]) + rename(v, w))

    return d((a,), (b,))


def test_zhang_shasha_is_the_tree_edit_distance():
    for seed in range(300):
        rng = random.Random(seed)
        a, b = _random_tree(rng, rng.randrange(1, 10)), _random_tree(rng, rng.randrange(1, 10))
        exact = _brute_force(reference.load_tree(a, False), reference.load_tree(b, False))
        assert tree_edit_distance(table_tree(a), table_tree(b)) == pytest.approx(exact, abs=1e-12), seed


def test_equals_apted_on_random_trees():
    """Exactly with integer costs (S-TEDS); with fractional cell costs the minimum is the same, but on
    deep random trees APTED mixes path types and its sums can differ from ours in the last bit."""
    config = reference.TedsConfig()
    for seed in range(200):
        rng = random.Random(seed)
        a, b = _random_tree(rng, rng.randrange(1, 30)), _random_tree(rng, rng.randrange(1, 30))
        for structure_only in (True, False):
            ours = tree_edit_distance(table_tree(a, structure_only), table_tree(b, structure_only))
            theirs = APTED(reference.load_tree(a, structure_only), reference.load_tree(b, structure_only),
                           config).compute_edit_distance()
            if structure_only:
                assert ours == theirs, seed
            else:
                assert ours == pytest.approx(theirs, abs=1e-12), seed


def test_unclipped_below_zero_like_the_official_code():
    # Unclosed <td>s nest: lxml makes a 40-deep chain, far from GT's flat 8 nodes (an untrained model's output).
    broken = doc("<tr>" + "<td>" * 40 + "12")
    ours = teds(broken, GT)
    assert ours < 0
    assert ours == reference.teds(broken, GT)
