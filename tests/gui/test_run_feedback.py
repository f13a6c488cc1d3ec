"""Run feedback on the canvas: step count and ETA while a node steps, each node's own
time after the run, and the legend of state colours."""

from __future__ import annotations

import re

from gui import theme
from gui.panels.legend import LEGEND
from gui.run_feedback import NodeTimer, eta_seconds, format_seconds

from .test_run import chain, ctrl_enter


def test_eta_is_the_mean_step_time_times_the_steps_left():
    assert eta_seconds(2.0, 4, 20) == 8.0
    assert eta_seconds(0.0, 0, 20) is None  # nothing measured yet
    assert eta_seconds(5.0, 20, 20) == 0.0
    clock = [100.0]
    t = NodeTimer(clock=lambda: clock[0])
    t.start("k")
    assert t.progress_text("k", 0, 10) == "0/10"
    clock[0] = 103.0
    assert t.progress_text("k", 3, 10) == "3/10 · 7.0 s left"
    clock[0] = 130.0
    assert t.progress_text("k", 10, 10) == "10/10"
    assert [format_seconds(s) for s in (0.042, 1.26, 42.4, 185)] == ["0.04 s", "1.3 s", "42 s", "3 min 5 s"]


def test_sampler_shows_steps_and_eta_then_every_node_its_time(window, qtbot):
    window.set_graph(chain(steps=12), None)
    seen: list[str] = []
    # connected after the presenter: by the time this runs, the canvas has been updated
    window.runner.event.connect(lambda ev, img: seen.append(window.scene.badges.get("b", "")))
    ctrl_enter(window)
    qtbot.waitUntil(lambda: window.last_report is not None, timeout=10_000)
    report = window.last_report
    assert report.status == "ok"
    stepping = [s for s in seen if re.fullmatch(r"\d+/12 · [\d.]+ s left", s)]
    assert stepping, seen  # the step count and an ETA were on the node while it ran
    assert any(s.startswith("1/12") for s in seen)
    badges = window.scene.badges
    for nid in "abs":
        assert badges[nid] == format_seconds(report.nodes[nid].seconds)
    assert report.nodes["b"].seconds > 0.1  # 12 steps of 20 ms: the time is the node's own

    window.presenter.last_report = None
    ctrl_enter(window)  # unchanged source: cached, and the node says so
    qtbot.waitUntil(lambda: window.presenter.last_report is not None, timeout=10_000)
    assert window.scene.badges["a"] == "cached"
    assert re.fullmatch(r"[\d.]+ s", window.scene.badges["b"])  # not deterministic: ran again


def test_legend_names_every_state_in_the_canvas_colours(window):
    legend = window.legend
    assert legend.isVisible()
    assert {state for state, _ in LEGEND} == set(theme.STATE_COLORS)
    for state in theme.STATE_COLORS:
        assert legend.color_of(state) == theme.STATE_COLORS[state]


def test_a_shown_node_sums_its_inner_nodes_and_ran_if_any_ran():
    t = NodeTimer()
    assert t.finish("sub", "executed", 2.0) == ("executed", 2.0)
    assert t.finish("sub", "cached", 0.0) == ("executed", 2.0)  # the last inner node was cached
    assert t.finish("other", "skipped", 0.0) == ("skipped", 0.0)
    assert t.finish("other", "cached", 0.5) == ("cached", 0.5)
    t.clear()  # a new run starts from nothing
    assert t.finish("sub", "cached", 0.0) == ("cached", 0.0)
