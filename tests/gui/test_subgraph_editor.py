"""Subgraphs in the editor: convert a selection, open it (double-click), edit inside,
go back up (Esc / breadcrumb), undo/redo, save and reopen, unpack, edit the
interface, promote a widget, library components in the search, and runs whose
inner-node events show on the instance node."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from gui.canvas.subgraph_marks import PortLabel, SubgraphBadge
from gui.search import search
from nodegraph import Graph, NodeProgress
from nodegraph.subgraph import extract

from .conftest import RELEASE, vpos


def chain(steps: int = 2) -> Graph:
    g = Graph()
    g.add_node("test.make_image", {"size": 8, "seed": 5}, id="a", ui={"pos": [0, 0]})
    g.add_node("test.slow_filter", {"steps": steps, "strength": 0.5}, id="b", ui={"pos": [320, 0]})
    g.add_node("test.save_image", {}, id="s", ui={"pos": [640, 0]})
    g.connect("a", "IMAGE", "b", "image")
    g.connect("b", "IMAGE", "s", "images")
    return g


def key(window, k, mod=Qt.KeyboardModifier.NoModifier):
    QTest.keyClick(window.view.viewport(), k, mod)


def convert(window, ids, name="Filter") -> str:
    sa = window.subgraph_actions
    sa.ask_subgraph_name = lambda default: name
    window.scene.select_nodes(ids)
    key(window, Qt.Key.Key_G, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    (inst,) = window.scene.selected_node_ids()
    return inst


def double_click(window, nid):
    item = window.scene.node_items[nid]
    title = item.mapToScene(item.boundingRect().center().x(), 10)
    QTest.mouseDClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                      vpos(window.view, title))


def inner_steps(window, def_id="subgraph_1"):
    return window.graph.subgraphs[def_id].graph.node("b").values["steps"]


def test_convert_open_edit_go_up_undo_redo_save_reopen(window, qtbot, tmp_path):
    window.set_graph(chain(), None)
    g = window.graph
    inst = convert(window, ["b"])
    assert "b" not in g.nodes and g.node(inst).type == "subgraph:subgraph_1"
    assert (g.link_into(inst, "image").src, g.link_into("s", "images").src) == ("a", inst)
    defn = g.subgraphs["subgraph_1"]
    assert defn.name == "Filter" and [i.name for i in defn.inputs] == ["image"]
    assert [o.name for o in defn.outputs] == ["IMAGE"]

    double_click(window, inst)
    sa = window.subgraph_actions
    assert window.scene.graph is not g and set(window.scene.graph.nodes) == {"b"}
    assert sa.breadcrumb.isVisible() and [b.text() for b in sa.breadcrumb.buttons] == ["Workflow", "Filter"]
    assert window.graph is g  # the document stays the workflow
    labels = {c.text() for c in window.scene.node_items["b"].childItems() if isinstance(c, PortLabel)}
    assert labels == {"in: image", "out: IMAGE"}  # where the interface enters and leaves

    window.scene.set_value("b", "steps", 3)  # an edit inside changes the definition
    assert inner_steps(window) == 3
    assert g.subgraphs["subgraph_1"].version == 2
    assert g.subgraphs["subgraph_1"].history[1].graph.node("b").values["steps"] == 2
    assert window.modified

    key(window, Qt.Key.Key_Escape)
    assert window.scene.graph is g and not sa.breadcrumb.isVisible()
    assert any(isinstance(c, SubgraphBadge) for c in window.scene.node_items[inst].childItems())

    key(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo the inner edit from the top level
    assert inner_steps(window) == 2
    key(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert inner_steps(window) == 3
    window.undo.undo()
    window.undo.undo()  # the conversion itself
    assert "b" in g.nodes and inst not in g.nodes and not g.subgraphs
    assert g.link_into("b", "image").src == "a" and g.link_into("s", "images").src == "b"
    window.undo.redo()
    window.undo.redo()
    assert inst in g.nodes and inner_steps(window) == 3 and "b" not in g.nodes
    assert window.revalidate() == []

    path = tmp_path / "wf.json"
    assert window.document.write(path)
    window.set_graph(Graph(), None)
    assert window.open_path(path, ask=False)
    g2 = window.graph
    assert g2.node(inst).type == "subgraph:subgraph_1" and inner_steps(window) == 3
    assert g2.subgraphs["subgraph_1"].version == 2 and set(g2.subgraphs["subgraph_1"].history) == {1}
    assert g2.link_into(inst, "image").src == "a"
    double_click(window, inst)  # reopened: still editable
    assert set(window.scene.graph.nodes) == {"b"}
    sa.breadcrumb.buttons[0].click()
    assert window.scene.graph is g2


def test_undo_of_conversion_while_inside_goes_back_up(window):
    window.set_graph(chain(), None)
    inst = convert(window, ["a", "b"])
    window.subgraph_actions.open(inst)
    assert set(window.scene.graph.nodes) == {"a", "b"}
    window.undo.undo()
    assert window.scene.graph is window.graph and {"a", "b", "s"} <= set(window.scene.node_items)


def test_run_inner_events_show_on_the_instance(window, qtbot):
    RELEASE.clear()
    window.set_graph(chain(steps=30), None)
    inst = convert(window, ["b"])
    seen = []
    window.runner.event.connect(lambda ev, img: seen.append(ev))
    window.run()
    qtbot.waitUntil(lambda: window.scene.states.get(inst) == "running", timeout=10_000)
    qtbot.waitUntil(lambda: window.scene.node_items[inst].progress is not None, timeout=10_000)
    RELEASE.set()
    qtbot.waitUntil(lambda: window.last_report is not None, timeout=15_000)
    assert window.last_report.status == "ok"
    assert any(isinstance(ev, NodeProgress) and ev.node_id == f"{inst}/b" for ev in seen)
    assert window.scene.states[inst] == "executed" and window.scene.states["s"] == "executed"
    assert window.scene.node_items[inst].preview is not None  # the inner node's preview, on the instance
    assert window.gallery.list.count() == 1  # the image saved after the subgraph reached the gallery
    window.subgraph_actions.open(inst)
    window.subgraph_actions.go_up()  # a visit inside does not wipe what the run showed
    assert window.scene.states[inst] == "executed" and window.scene.node_items[inst].preview is not None
    assert window.scene.node_items["s"].preview is not None


def test_instance_badge_is_the_time_of_all_its_inner_nodes(window, qtbot):
    from gui.run_feedback import format_seconds

    window.set_graph(chain(steps=12), None)
    inst = convert(window, ["b", "s"])  # the slow filter, then a fast save: the save finishes last
    window.run()
    qtbot.waitUntil(lambda: window.last_report is not None, timeout=15_000)
    nodes = window.last_report.nodes
    assert nodes[f"{inst}/b"].seconds > 3 * nodes[f"{inst}/s"].seconds  # else the old badge would match too
    spent = nodes[f"{inst}/b"].seconds + nodes[f"{inst}/s"].seconds
    assert window.scene.badges[inst] == format_seconds(spent)


def test_nested_conversion_runs_and_validates(window, qtbot):
    window.set_graph(chain(), None)
    outer = convert(window, ["a", "b"], "Outer")
    window.subgraph_actions.open(outer)
    inner = convert(window, ["b"], "Inner")
    assert set(window.graph.subgraphs) == {"subgraph_1", "subgraph_2"}  # both stored in the document
    assert window.scene.graph.node(inner).type == "subgraph:subgraph_2"
    window.scene.set_value("a", "size", 6)
    key(window, Qt.Key.Key_Escape)
    assert window.revalidate() == []
    window.run()
    qtbot.waitUntil(lambda: window.last_report is not None, timeout=15_000)
    assert window.last_report.status == "ok"
    from PIL import Image

    files = sorted((window.executor.output_dir).glob("*.png"))
    assert files and Image.open(files[-1]).size == (6, 6)  # the edit two levels down was used


def test_unpack_applies_promoted_values_and_undoes(window):
    window.set_graph(chain(), None)
    inst = convert(window, ["a", "b"])
    sa = window.subgraph_actions
    window.scene.select_nodes([inst])
    sa.ask_promote = lambda choices: next(c for c in choices if c.endswith(".strength"))
    assert sa.promote_selected()
    g = window.graph
    assert [i.name for i in g.subgraphs["subgraph_1"].inputs] == ["strength"]
    assert window.scene.node_items[inst].layout is not None
    window.scene.set_value(inst, "strength", 0.25)
    window.scene.select_nodes([inst])
    ids = sa.unpack_selected()
    assert len(ids) == 2 and inst not in g.nodes
    by_type = {g.node(n).type: n for n in ids}
    b = by_type["test.slow_filter"]
    assert g.node(b).values["strength"] == 0.25
    assert g.link_into(b, "image").src == by_type["test.make_image"] and g.link_into("s", "images").src == b
    assert window.revalidate() == []
    window.undo.undo()
    assert inst in g.nodes and g.link_into("s", "images").src == inst and not set(ids) & set(g.nodes)
    window.undo.undo()  # the value
    window.undo.undo()  # the promotion
    assert g.subgraphs["subgraph_1"].inputs == ()


def test_edit_interface_renames_and_removes_ports_with_undo(window):
    window.set_graph(chain(), None)
    inst = convert(window, ["b"])
    sa = window.subgraph_actions
    g = window.graph
    from gui.subgraph_actions import InterfaceEdit

    window.scene.select_nodes([inst])
    sa.ask_interface = lambda d: InterfaceEdit({"image": "picture"}, {"IMAGE": "result"}, "Sharpen")
    assert sa.edit_interface_selected()
    d = g.subgraphs["subgraph_1"]
    assert ([i.name for i in d.inputs], [o.name for o in d.outputs], d.name) == (["picture"], ["result"], "Sharpen")
    assert g.link_into(inst, "picture").src == "a" and g.link_into("s", "images").src_output == "result"
    assert window.revalidate() == []
    assert {p.name for p in window.scene.spec(g.node(inst).type).inputs} == {"picture"}
    sa.ask_interface = lambda d: InterfaceEdit({"picture": None}, {})
    assert sa.edit_interface_selected()
    assert g.link_into(inst, "picture") is None and g.subgraphs["subgraph_1"].inputs == ()
    window.undo.undo()
    window.undo.undo()
    d = g.subgraphs["subgraph_1"]
    assert [i.name for i in d.inputs] == ["image"] and g.link_into(inst, "image").src == "a"
    assert g.link_into("s", "images").src_output == "IMAGE"
    sa.ask_interface = lambda d: InterfaceEdit({"image": "not valid"}, {})
    assert not sa.edit_interface_selected() and "identifiers" in window.last_error


def test_library_component_is_searchable_addable_and_editable(window, registry):
    src = chain()
    defn, _ = extract(src, registry, ["b"], "sharpen", name="Sharpen Lib")
    registry.add_subgraph(defn)
    assert "subgraph:sharpen" in [s.type_id for s in search(registry, "sharpen lib")]
    window.view.search.open()
    window.view.search.edit.setText("Sharpen Lib")
    assert "subgraph:sharpen" in window.view.search.results()
    window.view.search.hide()
    window.set_graph(Graph(), None)
    nid = window.view.add_node("subgraph:sharpen", window.view.mapToScene(100, 100))
    item = window.scene.node_items[nid]
    assert item.spec is not None and item.spec.display_name == "Sharpen Lib"
    assert not window.graph.subgraphs  # a library component runs from the library
    assert window.subgraph_actions.open(nid)  # editing copies it into the workflow (undoable)
    assert "sharpen" in window.graph.subgraphs and set(window.scene.graph.nodes) == {"b"}
    window.subgraph_actions.go_up()
    window.undo.undo()
    assert not window.graph.subgraphs


def test_pinned_instance_is_not_opened_for_editing(window):
    window.set_graph(chain(), None)
    inst = convert(window, ["b"])
    window.subgraph_actions.open(inst)
    window.scene.set_value("b", "steps", 4)  # version 2
    window.subgraph_actions.go_up()
    window.graph.nodes[inst].type = "subgraph:subgraph_1@1"
    assert not window.subgraph_actions.open(inst)
    assert "pins version 1" in window.last_error


def test_inner_problem_marks_the_instance_and_focus_opens_it(window, qtbot):
    window.set_graph(chain(), None)
    inst = convert(window, ["b"])
    window.subgraph_actions.open(inst)
    window.scene.set_value("b", "strength", 7.0)  # above the input's maximum (1.0)
    window.subgraph_actions.go_up()
    problems = window.revalidate()
    assert [(p.node_id, p.input) for p in problems] == [(f"{inst}/b", "strength")]
    assert window.scene.issues[inst] == [(None, problems[0].message)]  # on the subgraph node, no inner port
    assert window.problems.list.item(0).text().startswith("⚠ Filter / Slow Filter › strength:")
    window.focus_node(f"{inst}/b")  # what a click in the Problems panel does
    assert window.scene.graph is not window.graph and window.scene.selected_node_ids() == ["b"]
    assert window.scene.issues["b"] == [("strength", problems[0].message)]


def test_interface_dialog_and_context_menu_entries(window):
    from PySide6.QtWidgets import QMenu

    from gui.subgraph_actions import InterfaceDialog

    window.set_graph(chain(), None)
    inst = convert(window, ["b"])
    dlg = InterfaceDialog(window.graph.subgraphs["subgraph_1"], window)
    (_, _, in_edit, _), (_, _, _, out_remove) = dlg.rows
    in_edit.setText("picture")
    out_remove.setChecked(True)
    change = dlg.edit()
    assert (change.inputs, change.outputs, change.name) == ({"image": "picture"}, {"IMAGE": None}, "Filter")
    menu = QMenu()
    window.subgraph_actions.context_items(menu, inst)
    texts = [a.text() for a in menu.actions() if a.text()]
    assert texts == ["Convert to Subgraph", "Open Subgraph", "Edit Interface…", "Promote Inner Widget…", "Unpack"]


def test_search_inside_a_subgraph_does_not_offer_the_subgraph_itself(window):
    window.set_graph(chain(), None)
    inst = convert(window, ["b"])
    window.scene.select_nodes(["a"])
    convert(window, ["a"], "Source")
    assert {s.type_id for s in window.subgraph_actions.editor.local_specs()} == {"subgraph:subgraph_1",
                                                                                "subgraph:subgraph_2"}
    window.subgraph_actions.open(inst)
    assert [s.type_id for s in window.subgraph_actions.editor.local_specs()] == ["subgraph:subgraph_2"]


def test_copy_paste_into_another_workflow_brings_the_definitions(window):
    window.set_graph(chain(), None)
    outer = convert(window, ["a", "b"], "Outer")
    window.subgraph_actions.open(outer)
    convert(window, ["b"], "Inner")  # nested: the copied node needs both definitions
    window.subgraph_actions.go_up()
    window.scene.select_nodes([outer])
    window.copy()
    window.set_graph(Graph(), None)
    (pasted,) = window.paste()
    assert set(window.graph.subgraphs) == {"subgraph_1", "subgraph_2"}
    assert window.graph.node(pasted).type == "subgraph:subgraph_1"
    assert window.revalidate() == []  # no "unknown subgraph": its definitions came along
    window.undo.undo()  # one step: the node and the definitions it brought
    assert not window.graph.nodes and not window.graph.subgraphs


def test_convert_promotes_changing_seeds_and_they_advance_after_a_run(window, qtbot):
    RELEASE.set()
    window.set_graph(chain(), None)
    window.graph.set_ui("a", "seed_control", {"seed": "increment"})
    inst = convert(window, ["a", "b"])
    g = window.graph
    (seed_in,) = [i for i in g.subgraphs["subgraph_1"].inputs if i.name == "seed"]
    assert seed_in.targets == (("a", "seed"),) and g.node(inst).values["seed"] == 5
    assert g.node(inst).ui["seed_control"] == {"seed": "increment"}
    window.subgraph_actions.open(inst)  # inside, the promoted seed draws as fed from outside: no editor, no control
    rows = {(r.kind, r.input.name) for r in window.scene.node_items["a"].layout.rows if r.input is not None}
    assert ("widget", "seed") in rows and ("seed_control", "seed") not in rows and ("widget", "size") in rows
    assert window.scene.interface_fed("a", "seed") and not window.scene.interface_fed("a", "size")
    item = window.scene.node_items["a"]
    (seed_row,) = [r for r in item.layout.rows if r.input is not None and r.input.name == "seed"]
    for x in (seed_row.rect.center().x(), seed_row.rect.right() - 14):  # the value, the step arrow
        QTest.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                         vpos(window.view, item.mapToScene(x, seed_row.rect.center().y())))
    assert window.scene.editor is None and "seed" not in window.scene.graph.node("a").values
    window.subgraph_actions.go_up()
    window.scene.select_nodes([inst])
    from gui.subgraph_actions import InterfaceEdit

    window.subgraph_actions.ask_interface = lambda d: InterfaceEdit({"seed": "first_seed"})
    assert window.subgraph_actions.edit_interface_selected()  # the control follows the renamed input
    assert g.node(inst).ui["seed_control"] == {"first_seed": "increment"} and g.node(inst).values["first_seed"] == 5
    window.undo.undo()
    assert g.node(inst).ui["seed_control"] == {"seed": "increment"} and g.node(inst).values["seed"] == 5
    window.run()
    qtbot.waitUntil(lambda: window.last_report is not None, timeout=10_000)
    assert window.last_report.status == "ok"
    assert g.node(inst).values["seed"] == 6  # the run used 5; the next one gets 6
    window.undo.undo()  # the seed update
    window.undo.undo()  # the conversion
    assert g.node("a").ui["seed_control"] == {"seed": "increment"} and g.node("a").values["seed"] == 5


def test_convert_and_unpack_inside_a_subgraph_keep_its_interface_connected(window, qtbot):
    RELEASE.set()
    window.set_graph(chain(), None)
    outer = convert(window, ["b"], "Outer")  # its input feeds b.image, its output is b.IMAGE
    sa = window.subgraph_actions
    sa.open(outer)
    inner = convert(window, ["b"], "Inner")  # the outer ports now pass through the inner node
    d = window.graph.subgraphs["subgraph_1"]
    assert d.inputs[0].targets == ((inner, "image"),) and d.outputs[0].source == (inner, "IMAGE")
    assert window.revalidate() == []
    window.scene.select_nodes([inner])
    (b2,) = sa.unpack_selected()  # and back to the plain node
    d = window.graph.subgraphs["subgraph_1"]
    assert d.inputs[0].targets == ((b2, "image"),) and d.outputs[0].source == (b2, "IMAGE")
    sa.go_up()
    assert window.revalidate() == []
    window.run()
    qtbot.waitUntil(lambda: window.last_report is not None, timeout=10_000)
    assert window.last_report.status == "ok"
    window.undo.undo()  # unpack undone: the ports point at the inner subgraph node again
    d = window.graph.subgraphs["subgraph_1"]
    assert d.inputs[0].targets == ((inner, "image"),) and d.outputs[0].source == (inner, "IMAGE")


def test_deleting_an_inner_node_and_undoing_restores_the_interface(window):
    window.set_graph(chain(), None)
    inst = convert(window, ["b"])
    window.subgraph_actions.open(inst)
    window.scene.select_nodes(["b"])
    window.edits.delete_selection()
    d = window.graph.subgraphs["subgraph_1"]
    assert d.inputs[0].targets == () and d.outputs[0].source is None  # a valid definition meanwhile
    window.undo.undo()
    d = window.graph.subgraphs["subgraph_1"]
    assert d.inputs[0].targets == (("b", "image"),) and d.outputs[0].source == ("b", "IMAGE")
    window.subgraph_actions.go_up()
    assert window.revalidate() == []


def test_interface_rename_reaches_instances_inside_other_definitions(window, tmp_path):
    from gui.subgraph_actions import InterfaceEdit

    window.set_graph(chain(), None)
    outer = convert(window, ["a", "b"], "Outer")
    sa = window.subgraph_actions
    sa.open(outer)
    inner = convert(window, ["b"], "Inner")
    sa.go_to(0)
    window.graph.add_node("subgraph:subgraph_2", id="top")  # one more instance at the top level
    window.graph.connect(outer, "IMAGE", "top", "image")
    assert window.document.write(tmp_path / "w.json")
    assert window.open_path(tmp_path / "w.json", ask=False)  # no working graph of Outer exists now
    inner_def = window.graph.subgraphs["subgraph_2"]
    assert sa.apply_interface(inner_def, InterfaceEdit({"image": "picture"}))
    outer_graph = window.graph.subgraphs["subgraph_1"].graph
    assert outer_graph.link_into(inner, "picture").src == "a"  # inside Outer's definition
    assert window.graph.link_into("top", "picture").src == outer
    assert window.revalidate() == []
    window.undo.undo()
    assert window.graph.subgraphs["subgraph_1"].graph.link_into(inner, "image").src == "a"
