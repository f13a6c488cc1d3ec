"""The graph model: edits, change notifications a view can observe, stable string ids."""

from __future__ import annotations

import pytest

from nodegraph import Graph, GraphChange, Link, dump_workflow_text, load_workflow_text
from nodegraph.graph import GraphError


@pytest.fixture
def observed():
    g = Graph()
    seen: list[GraphChange] = []
    unsubscribe = g.subscribe(seen.append)
    return g, seen, unsubscribe


def kinds(changes: list[GraphChange]) -> list[str]:
    return [c.kind for c in changes]


def test_add_and_remove_nodes_notify(observed):
    g, seen, _ = observed
    a = g.add_node("t.const", {"value": 3}, id="a")
    b = g.add_node("t.add")
    assert (a.id, b.id) == ("a", "1") and isinstance(b.id, str)
    assert seen == [GraphChange("node_added", "a", new=a), GraphChange("node_added", "1", new=b)]
    assert len(g) == 2 and "a" in g and [n.id for n in g] == ["a", "1"]
    seen.clear()
    removed, links = g.remove_node("a")
    assert removed is a and links == [] and "a" not in g
    assert seen == [GraphChange("node_removed", "a", old=a)]


def test_values_mode_title_ui_notify_with_old_and_new(observed):
    g, seen, _ = observed
    g.add_node("t.const", {"value": 3}, id="c")
    seen.clear()
    g.set_value("c", "value", 4)
    g.set_mode("c", "bypass")
    g.set_mode("c", "mute")
    g.set_title("c", "My constant")
    g.set_ui("c", "pos", [10, 20])
    g.unset_value("c", "value")
    g.unset_value("c", "value")  # nothing to unset: no notification
    assert seen == [
        GraphChange("value_changed", "c", "value", 3, 4),
        GraphChange("mode_changed", "c", "mode", "normal", "bypass"),
        GraphChange("mode_changed", "c", "mode", "bypass", "mute"),
        GraphChange("title_changed", "c", "title", None, "My constant"),
        GraphChange("ui_changed", "c", "pos", None, [10, 20]),
        GraphChange("value_changed", "c", "value", 4, None),
    ]
    n = g.node("c")
    assert n.values == {} and n.mode == "mute" and n.title == "My constant" and n.ui == {"pos": [10, 20]}


def test_connect_disconnect_and_replacing_a_link_into_an_input(observed):
    g, seen, _ = observed
    for nid in ("c1", "c2", "add"):
        g.add_node("t.const" if nid != "add" else "t.add", id=nid)
    seen.clear()
    first = g.connect("c1", "INT", "add", "a")
    assert first == Link("c1", "INT", "add", "a")
    assert seen == [GraphChange("link_added", "add", "a", None, first)]
    seen.clear()
    second = g.connect("c2", "INT", "add", "a")  # an input has one source: the old link goes
    assert seen == [GraphChange("link_removed", "add", "a", first, None),
                    GraphChange("link_added", "add", "a", first, second)]
    assert g.links == [second] and g.link_into("add", "a") == second
    assert g.links_from("c1") == [] and g.links_from("c2") == [second]
    g.connect("c2", "INT", "add", "b")
    assert sorted(g.links_into("add")) == ["a", "b"]
    assert [lk.dst_input for lk in g.links_from("c2")] == ["a", "b"]
    seen.clear()
    assert g.disconnect("add", "a") == second
    assert seen == [GraphChange("link_removed", "add", "a", second, None)]
    assert g.disconnect("add", "a") is None  # already gone: no-op
    assert g.link_into("add", "a") is None and len(g.links) == 1


def test_removing_a_node_removes_its_links_both_ways_and_reinserting_restores(observed):
    g, seen, _ = observed
    g.add_node("t.const", id="c")
    g.add_node("t.add", id="m")
    g.add_node("t.sink", id="s")
    g.connect("c", "INT", "m", "a")
    g.connect("m", "INT", "s", "value")
    seen.clear()
    node, links = g.remove_node("m")
    assert {(lk.src, lk.dst) for lk in links} == {("c", "m"), ("m", "s")}
    assert kinds(seen) == ["link_removed", "link_removed", "node_removed"]
    assert g.links == [] and g.links_from("c") == [] and g.links_into("s") == {}
    # undo: reinsert the same object and its links
    g.insert_node(node)
    for lk in links:
        g.connect(lk.src, lk.src_output, lk.dst, lk.dst_input)
    assert len(g.links) == 2 and g.node("m") is node


def test_unsubscribe_stops_notifications(observed):
    g, seen, unsubscribe = observed
    unsubscribe()
    unsubscribe()  # idempotent
    g.add_node("t.const")
    assert seen == []


def test_groups_and_meta_notify(observed):
    g, seen, _ = observed
    grp = g.add_group("Loaders", (0, 0, 100, 50), "#335", id="g1")
    g.update_group("g1", title="Models", bounds=[1, 2, 3, 4])
    g.set_meta("name", "demo")
    g.remove_group("g1")
    assert kinds(seen) == ["group_added", "group_changed", "group_changed", "meta_changed", "group_removed"]
    assert grp.title == "Models" and grp.bounds == (1, 2, 3, 4) and g.meta == {"name": "demo"}
    g.add_group(id="g2")
    with pytest.raises(GraphError, match="no field 'size'"):
        g.update_group("g2", size=3)
    with pytest.raises(GraphError, match="group id 'g2' already exists"):
        g.add_group(id="g2")


def test_edit_errors_are_clear():
    g = Graph()
    g.add_node("t.const", id="a")
    with pytest.raises(GraphError, match="node id 'a' already exists"):
        g.add_node("t.const", id="a")
    with pytest.raises(GraphError, match="mode must be one of"):
        g.add_node("t.const", mode="off")
    with pytest.raises(GraphError, match="mode must be one of"):
        g.set_mode("a", "disabled")
    with pytest.raises(GraphError, match="no node with id 'zzz'"):
        g.connect("a", "INT", "zzz", "x")
    with pytest.raises(GraphError, match="no node with id 'zzz'"):
        g.set_value("zzz", "value", 1)
    with pytest.raises(GraphError, match="must not be empty"):
        g.add_node("t.const", id="")


def test_ids_are_stable_strings_that_survive_save_load_and_never_collide():
    g = Graph()
    g.add_node("t.const", id="7")
    g.add_node("t.const", id="sampler")
    assert g.add_node("t.const").id == "8"  # allocated after the highest numeric id seen
    g.remove_node("8")
    g2 = load_workflow_text(dump_workflow_text(g))
    assert list(g2.nodes) == ["7", "sampler"]
    new = g2.add_node("t.add")
    assert new.id not in {"7", "sampler"} and new.id.isdigit() and int(new.id) > 7
    # ids are not memory addresses: an equal graph built elsewhere has the same ids
    assert list(load_workflow_text(dump_workflow_text(g)).nodes) == list(g2.nodes)[:2]


def test_copy_is_independent_of_later_edits_and_has_no_listeners():
    g = Graph()
    g.add_node("t.const", {"value": 1}, id="c")
    g.add_node("t.sink", id="s")
    g.connect("c", "INT", "s", "value")
    seen: list[GraphChange] = []
    g.subscribe(seen.append)
    snap = g.copy()
    g.set_value("c", "value", 2)
    g.set_ui("c", "pos", [5, 5])
    g.disconnect("s", "value")
    snap.add_node("t.add", id="other")
    assert snap.node("c").values == {"value": 1} and snap.node("c").ui == {}
    assert snap.link_into("s", "value") == Link("c", "INT", "s", "value")
    assert "other" not in g and kinds(seen) == ["value_changed", "ui_changed", "link_removed"]


def test_removing_a_node_with_a_self_loop_reports_the_link_once(observed):
    g, seen, _ = observed
    g.add_node("t.add", id="x")
    loop = g.connect("x", "INT", "x", "a")
    seen.clear()
    node, links = g.remove_node("x")
    assert links == [loop]
    assert kinds(seen) == ["link_removed", "node_removed"]
