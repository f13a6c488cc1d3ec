"""Pack runtime services and published statistics: ``ctx.services`` lives as long as the executor;
``ctx.stats(name, data)`` reaches the event stream, the run report (JSON, the server's compact
report), the terminal progress line and ``nodegraph run``'s summary; ``--vram-budget`` is an
engine option that only travels in settings (the engine names no pack)."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest

from nodegraph import Executor, Graph, NodeStats, Registry, RunReport
from nodegraph.cli import _parser, _settings
from nodegraph.progress import TerminalProgress
from nodegraph.spec import Int, Out, node


@node("stats_test.counter", inputs=[Int("n", 1)], outputs=[Out("INT", "INT")], deterministic=False)
def counter(ctx, n: int) -> int:  # noqa: ANN001
    """Counts its calls in an executor-lifetime service and publishes the count."""
    box = ctx.services.setdefault("stats_test.calls", [])
    box.append(n)
    ctx.stats("memory", {"line": f"{len(box)} calls", "calls": len(box), "budget": ctx.settings.get("vram_budget")})
    return len(box)


def registry() -> Registry:
    reg = Registry()
    reg.add_pack("stats_test", [counter])
    return reg


def graph() -> Graph:
    g = Graph()
    g.add_node("stats_test.counter", {"n": 1}, id="c")
    return g


def test_services_live_with_the_executor_and_stats_reach_report_events_and_progress(tmp_path: Path) -> None:
    ex = Executor(registry(), output_dir=tmp_path, settings={"vram_budget": "4G"})
    events: list[NodeStats] = []
    stream = StringIO()
    progress = TerminalProgress(stream, enabled=True)

    def listen(ev):  # noqa: ANN001, ANN202
        progress(ev)
        if isinstance(ev, NodeStats):
            events.append(ev)

    ex.run(graph(), outputs=["c"]).raise_for_status()
    report = ex.run(graph(), outputs=["c"], on_event=listen)
    assert report.stats["memory"] == {"line": "2 calls", "calls": 2, "budget": "4G"}  # one service, two runs
    assert [(e.node_id, e.name, e.line) for e in events] == [("c", "memory", "2 calls")]
    assert json.loads(json.dumps(report.to_dict()))["stats"]["memory"]["calls"] == 2
    assert "memory: 2 calls" in stream.getvalue()
    assert events[0].to_dict()["kind"] == "node_stats"
    fresh = Executor(registry(), output_dir=tmp_path).run(graph(), outputs=["c"])
    assert fresh.stats["memory"]["calls"] == 1  # a new executor has its own services
    assert "stats" not in RunReport("r").to_dict()  # nothing published: no field


def test_server_compact_report_keeps_the_stats(tmp_path: Path) -> None:
    from nodegraph.server.redact import Redactor
    from nodegraph.server.runs import compact_report

    report = Executor(registry(), output_dir=tmp_path).run(graph(), outputs=["c"])
    compact = compact_report(report, tmp_path, Redactor.for_server(tmp_path, tmp_path))
    assert compact["stats"]["memory"]["line"] == "1 calls"


@pytest.mark.parametrize("command", ["run", "batch", "serve", "gui"])
def test_vram_budget_flag_travels_in_settings(command: str) -> None:
    argv = [command] + (["wf.json"] if command in ("run", "batch") else []) + ["--vram-budget", "50%"]
    args = _parser().parse_args(argv)
    assert args.vram_budget == "50%"
    if command != "gui":
        assert _settings(args)["vram_budget"] == "50%"


@pytest.mark.parametrize("bad", ["lots", "0", "-4G"])
def test_bad_vram_budget_exits_2_with_the_forms(capsys, bad: str) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["run", "wf.json", f"--vram-budget={bad}"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "auto" in err and "4G" in err


def test_cli_run_prints_the_stats_line(tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    from nodegraph import cli, save_workflow

    wf = tmp_path / "wf.json"
    save_workflow(graph(), wf)
    monkeypatch.setattr(cli, "_registry", lambda args=None: registry())
    assert cli.main(["run", str(wf), "-o", str(tmp_path / "out"), "--output", "c", "--vram-budget", "2G"]) == 0
    assert "memory: 1 calls" in capsys.readouterr().err
