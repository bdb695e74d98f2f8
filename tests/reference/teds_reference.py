"""TEDS the straightforward way: PubTabNet's `src/metric.py` algorithm written plainly (test-only).

An independent transcription of the definition in docs/metric-facts.md §4, kept deliberately simple: lxml
builds the tree, the `apted` package computes the tree edit distance, and a plain pure-Python
Levenshtein (like the official dependency `distance.levenshtein`: equal sequences short-cut to 0,
otherwise one DP column) prices cell renames. `metrics.teds` must return the same scores, faster (to
the bit on tables, but for a rare last-bit difference where APTED sums in another order).

Shared with metrics.teds by decision: the parser is passed by keyword (the official positional call hits
lxml's `base_url`), and inputs the official code would crash on score 0.0 (two empty tables: 1.0).
"""

from __future__ import annotations

from apted import APTED, Config
from lxml import etree, html


class Node:
    """A tree node as the official TableTree holds it."""

    def __init__(self, tag, colspan=None, rowspan=None, content=None):
        self.tag, self.colspan, self.rowspan, self.content = tag, colspan, rowspan, content
        self.children: list[Node] = []


def levenshtein(a, b) -> int:
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    column = list(range(len(b) + 1))
    for x in range(1, len(a) + 1):
        diagonal, column[0] = column[0], x
        for y in range(1, len(b) + 1):
            above = column[y]
            column[y] = min(column[y] + 1, column[y - 1] + 1, diagonal + (a[x - 1] != b[y - 1]))
            diagonal = above
    return column[-1]


class TedsConfig(Config):
    def rename(self, node1, node2):
        if node1.tag != node2.tag or node1.colspan != node2.colspan or node1.rowspan != node2.rowspan:
            return 1.0
        if node1.tag == "td" and (node1.content or node2.content):
            return float(levenshtein(node1.content, node2.content)) / max(len(node1.content),
                                                                          len(node2.content))
        return 0.0


def tokenize(node, tokens: list) -> None:
    tokens.append(f"<{node.tag}>")
    if node.text is not None:
        tokens.extend(node.text)
    for child in node.getchildren():
        tokenize(child, tokens)
    if node.tag != "unk":
        tokens.append(f"</{node.tag}>")
    if node.tag != "td" and node.tail is not None:
        tokens.extend(node.tail)


def load_tree(node, structure_only: bool) -> Node:
    if node.tag == "td":
        tokens: list = []
        if not structure_only:
            tokenize(node, tokens)
        return Node("td", int(node.attrib.get("colspan", "1")), int(node.attrib.get("rowspan", "1")),
                    tokens[1:-1])
    tree = Node(node.tag)
    tree.children = [load_tree(child, structure_only) for child in node.getchildren()]
    return tree


def teds(pred: str, true: str, structure_only: bool = False) -> float:
    if not pred or not true:
        return 0.0
    parser = html.HTMLParser(remove_comments=True, encoding="utf-8")
    try:
        pred_root = html.fromstring(pred, parser=parser)
        true_root = html.fromstring(true, parser=parser)
    except (ValueError, etree.LxmlError):
        return 0.0
    if not (pred_root.xpath("body/table") and true_root.xpath("body/table")):
        return 0.0
    pred_table, true_table = pred_root.xpath("body/table")[0], true_root.xpath("body/table")[0]
    n_nodes = max(len(pred_table.xpath(".//*")), len(true_table.xpath(".//*")))
    try:
        pred_tree, true_tree = load_tree(pred_table, structure_only), load_tree(true_table, structure_only)
    except ValueError:
        return 0.0
    distance = APTED(pred_tree, true_tree, TedsConfig()).compute_edit_distance()
    if n_nodes == 0:
        return 1.0 if distance == 0 else 0.0
    return 1.0 - float(distance) / n_nodes
