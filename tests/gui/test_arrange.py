"""Arrange (Ctrl+L): left-to-right layers, crossing reduction, groups kept together, one undo step."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from gui.arrange import arrange, count_crossings, layers
from nodegraph import Graph

CTRL = Qt.KeyboardModifier.ControlModifier


def crossing_graph() -> Graph:
    """Two pipelines drawn so that their wires cross, every node piled in one column."""
    g = Graph()
    g.add_node("test.make_image", {}, id="a1", ui={"pos": [0, 0]})
    g.add_node("test.make_image", {}, id="a2", ui={"pos": [0, 400]})
    g.add_node("test.slow_filter", {}, id="f1", ui={"pos": [0, 800]})  # fed by a2
    g.add_node("test.slow_filter", {}, id="f2", ui={"pos": [0, 1200]})  # fed by a1
    g.add_node("test.save_image", {}, id="s1", ui={"pos": [0, 1600]})
    g.add_node("test.save_image", {}, id="s2", ui={"pos": [0, 2000]})
    g.connect("a2", "IMAGE", "f1", "image")
    g.connect("a1", "IMAGE", "f2", "image")
    g.connect("f1", "IMAGE", "s2", "images")
    g.connect("f2", "IMAGE", "s1", "images")
    return g


def rects(window) -> dict[str, tuple[float, float, float, float]]:
    out = {}
    for nid, it in window.scene.node_items.items():
        r = it.sceneBoundingRect()
        out[nid] = (r.x(), r.y(), r.width(), r.height())
    return out


def overlaps(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_ctrl_l_lays_out_by_dependency_without_crossings_and_undoes(window):
    window.set_graph(crossing_graph(), None)
    QApplication.processEvents()
    g = window.graph
    before = {nid: list(n.ui["pos"]) for nid, n in g.nodes.items()}
    depth_before = window.undo.count()
    window.view.setFocus()
    QTest.keyClick(window.view.viewport(), Qt.Key.Key_L, CTRL)

    assert window.undo.count() == depth_before + 1
    assert window.undo.undoText().startswith("Arrange")
    r = rects(window)
    for lk in g.links:  # every wire runs left to right
        assert r[lk.src][0] + r[lk.src][2] < r[lk.dst][0], (lk.src, lk.dst)
    ids = list(r)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            assert not overlaps(r[a], r[b]), (a, b)
    column = {nid: round(r[nid][0]) for nid in ids}
    cols = sorted(set(column.values()))
    assert len(cols) == 3  # sources, filters, savers
    col_index = {nid: cols.index(x) for nid, x in column.items()}
    order = {}
    for c in range(3):
        members = sorted((n for n in ids if col_index[n] == c), key=lambda n: r[n][1])
        order.update({n: i for i, n in enumerate(members)})
    assert count_crossings(order, col_index, [(lk.src, lk.dst) for lk in g.links]) == 0

    window.undo.undo()
    assert {nid: list(n.ui["pos"]) for nid, n in g.nodes.items()} == before
    assert window.scene.node_items["f2"].pos() == QPointF(0, 1200)


def test_arrange_keeps_group_members_together_and_refits_the_group(window):
    g = crossing_graph()
    # a1 and f1 share a group, although they are not linked and start far apart
    g.add_group("Pair", (-20, -40, 400, 1000), id="grp")  # holds a1 (y 0) and a2 (y 400); f1 at 800 too
    window.set_graph(g, None)
    QApplication.processEvents()
    members_before = {nid for nid, it in window.scene.node_items.items()
                      if window.scene.group_items["grp"].sceneBoundingRect().contains(it.sceneBoundingRect().center())}
    assert members_before == {"a1", "a2", "f1"}
    assert window.arrange() > 0
    frame = window.scene.group_items["grp"].sceneBoundingRect()
    inside = {nid for nid, it in window.scene.node_items.items() if frame.contains(it.sceneBoundingRect().center())}
    assert inside == members_before  # the same members, and nobody else's node under its frame


def test_arrange_selection_moves_only_the_selection(window):
    window.set_graph(crossing_graph(), None)
    QApplication.processEvents()
    window.scene.select_nodes(["a1", "f2", "s1"])
    others = {nid: list(window.graph.node(nid).ui["pos"]) for nid in ("a2", "f1", "s2")}
    window.arrange()
    assert {nid: list(window.graph.node(nid).ui["pos"]) for nid in others} == others
    xs = [window.graph.node(n).ui["pos"][0] for n in ("a1", "f2", "s1")]
    assert xs == sorted(xs) and len(set(xs)) == 3


def test_layers_are_longest_paths_and_cycles_do_not_break_them():
    assert layers("abcd", [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d")]) == {"a": 0, "b": 1, "c": 2, "d": 3}
    cyc = layers("xyz", [("x", "y"), ("y", "x"), ("y", "z")])
    assert cyc["x"] == cyc["y"] == 0 and cyc["z"] == 1


def test_crossing_count_matches_the_pairwise_definition():
    import random

    rng = random.Random(7)
    for _ in range(300):
        left = [f"l{i}" for i in range(rng.randint(1, 9))]
        right = [f"r{i}" for i in range(rng.randint(1, 9))]
        col = {n: 0 for n in left} | {n: 1 for n in right}
        order = {n: i for i, n in enumerate(rng.sample(left, len(left)))}
        order |= {n: i for i, n in enumerate(rng.sample(right, len(right)))}
        edges = list({(rng.choice(left), rng.choice(right)) for _ in range(rng.randint(1, 25))})
        pairwise = sum(1 for i, (a1, b1) in enumerate(edges) for a2, b2 in edges[i + 1:]
                       if (order[a1] - order[a2]) * (order[b1] - order[b2]) < 0)
        assert count_crossings(order, col, edges) == pairwise


def test_barycentre_sweeps_remove_crossings_of_a_twisted_ladder():
    n = 6
    ids = [f"l{i}" for i in range(n)] + [f"r{i}" for i in range(n)]
    edges = [(f"l{i}", f"r{n - 1 - i}") for i in range(n)]  # every pair crosses when drawn in id order
    sizes = {i: (100.0, 50.0) for i in ids}
    pos = {f"l{i}": (0.0, i * 60.0) for i in range(n)} | {f"r{i}": (200.0, i * 60.0) for i in range(n)}
    col = {i: (0 if i.startswith("l") else 1) for i in ids}
    start_order = {i: int(i[1:]) for i in ids}
    assert count_crossings(start_order, col, edges) == n * (n - 1) // 2
    res = arrange(ids, edges, sizes, pos)
    order = {i: sorted((j for j in ids if col[j] == col[i]), key=lambda j: res.positions[j][1]).index(i) for i in ids}
    assert count_crossings(order, col, edges) == 0
