"""Running sweeps on the torch-free primitives pack: one executor, manifest, resume, failures,
validation before work, the progress bar, and the ``nodegraph batch`` command."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from nodegraph import Executor, save_workflow
from nodegraph.batch import (
    BatchInvalid,
    BatchProgress,
    ManifestMismatch,
    SweepError,
    manifest_core,
    run_batch,
)
from nodegraph.cli import main
from tests.headless.helpers import primitives_registry, text_graph

SWEEPS = ["div.b=0..3", "cat.b=hello,a b/c"]


def read_manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def test_grid_batch_names_files_by_parameters_and_runs_shared_work_once(tmp_path):
    out = tmp_path / "out"
    executor = Executor(primitives_registry(), output_dir=out)
    seen_on_disk = []

    def on_item(item, entry):  # the manifest on disk is current after every item
        disk = read_manifest(out)
        seen_on_disk.append((item.index, disk["items"][item.index]["status"], disk["counts"]))

    result = run_batch(text_graph(), SWEEPS, executor=executor, output_dir=out, on_item=on_item, progress=False)
    m = read_manifest(out)
    assert m == result.manifest
    assert m["total"] == 8 and m["mode"] == "grid"
    assert [e["index"] for e in m["items"]] == list(range(8))
    # b=0 divides by zero: those two items fail, are recorded, and the batch goes on.
    assert [e["status"] for e in m["items"]] == ["error"] * 2 + ["ok"] * 6
    err = m["items"][0]["error"]
    assert err["node_id"] == "div" and err["input"] == "b" and "by zero" in err["message"]
    assert seen_on_disk[0][1] == "error" and seen_on_disk[-1][2] == {"error": 2, "ok": 6}
    # Exact, type-converted parameters and parameter-named outputs whose contents match them.
    item = m["items"][7]
    assert item["overrides"] == {"div.b": 3, "cat.b": "a b/c"}
    assert item["name"].startswith("div.b=3_cat.b=a-b-c-")
    assert item["outputs"] == [f"result_{item['name']}_00001.txt"]
    for e in m["items"][2:]:
        (rel,) = e["outputs"]
        assert (out / rel).read_text() == f"{12 // e['overrides']['div.b']}:{e['overrides']['cat.b']}"
        assert isinstance(e["seconds"], float) and 0 < e["node_seconds"] <= e["seconds"]
    # ONE executor: the shared upstream node ran once for the whole batch.
    executed = [nid for o in result.outcomes.values() for nid in o.executed]
    assert executed.count("num") == 1
    # div succeeds once per distinct b (1, 2, 3; a failure is not cached), cat runs once per ok item.
    assert executed.count("div") == 3 and executed.count("cat") == 6
    written = ["manifest.json"] + [e["outputs"][0] for e in m["items"][2:]]
    assert sorted(p.name for p in out.iterdir()) == sorted(written)
    assert not result.ok and len(result.failed) == 2


def test_resume_skips_written_items_and_reruns_missing_or_failed(tmp_path):
    out = tmp_path / "out"
    first = run_batch(text_graph(), SWEEPS, registry=primitives_registry(), output_dir=out, progress=False)
    deleted = out / first.manifest["items"][4]["outputs"][0]
    deleted.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.txt")}
    again = run_batch(text_graph(), SWEEPS, registry=primitives_registry(), output_dir=out, progress=False)
    # Items 2,3,5,6,7 were ok with their files present; 4 lost its file; 0,1 had failed.
    assert again.skipped == [2, 3, 5, 6, 7]
    assert sorted(again.outcomes) == [0, 1, 4]
    assert deleted.exists()
    for name, mtime in before.items():  # files of skipped items were not rewritten
        assert (out / name).stat().st_mtime_ns == mtime
    assert manifest_core(again.manifest) == manifest_core(first.manifest)
    assert len(list(out.glob("*.txt"))) == 6  # no duplicates


def test_cancel_stops_the_batch_and_a_rerun_finishes_it(tmp_path):
    from nodegraph import CancelToken

    out = tmp_path / "out"
    token = CancelToken()
    stopped = run_batch(text_graph(), ["div.b=1..5"], registry=primitives_registry(), output_dir=out,
                        progress=False, cancel=token, on_item=lambda item, entry: token.cancel())
    assert stopped.cancelled and not stopped.ok
    assert [e["status"] for e in read_manifest(out)["items"]] == ["ok"] + ["pending"] * 4
    rest = run_batch(text_graph(), ["div.b=1..5"], registry=primitives_registry(), output_dir=out, progress=False)
    assert rest.ok and rest.skipped == [0] and sorted(rest.outcomes) == [1, 2, 3, 4]


def test_manifest_of_another_workflow_is_refused_and_fresh_starts_over(tmp_path):
    out = tmp_path / "out"
    run_batch(text_graph(), ["div.b=1,2"], registry=primitives_registry(), output_dir=out, progress=False)
    other = text_graph()
    other.set_value("num", "value", 100)
    with pytest.raises(ManifestMismatch, match="different workflow"):
        run_batch(other, ["div.b=1,2"], registry=primitives_registry(), output_dir=out, progress=False)
    fresh = run_batch(other, ["div.b=1,2"], registry=primitives_registry(), output_dir=out, progress=False,
                      fresh=True)
    assert fresh.ok and fresh.skipped == []
    assert (out / fresh.manifest["items"][1]["outputs"][0]).read_text() == "50:x"


def test_every_item_is_validated_before_any_work(tmp_path):
    out = tmp_path / "out"
    reg = primitives_registry()
    with pytest.raises(BatchInvalid) as exc:
        run_batch(text_graph(), ["div.b=1,x,3", "nope.value=1"], registry=reg, output_dir=out)
    text = str(exc.value)
    assert "no node 'nope'" in text and "cannot use 'x'" in text
    assert "input 'b'" in text
    with pytest.raises(BatchInvalid, match="not an available choice"):
        run_batch(text_graph(), ["div.op=add,teleport"], registry=reg, output_dir=out)
    with pytest.raises(SweepError):
        run_batch(text_graph(), ["div.b=abc..x"], registry=reg, output_dir=out)
    assert not out.exists()  # nothing was written


def test_save_prefix_stays_inside_output_folder(tmp_path):
    out = tmp_path / "out"
    result = run_batch(text_graph(prefix="sub/run"), {"cat.b": ["../../escape", "/abs"]},
                       registry=primitives_registry(), output_dir=out, progress=False)
    assert result.ok
    for e in result.manifest["items"]:
        (rel,) = e["outputs"]
        path = (out / rel).resolve()
        assert out.resolve() in path.parents and rel.startswith("sub/run_b=")
    assert not (tmp_path / "escape").exists()


def test_progress_bar_covers_the_whole_batch():
    stream = io.StringIO()
    bar = BatchProgress(3, stream, enabled=True)
    for name in ("a", "b", "c"):
        bar.start_item(name)
        bar.finish_item("ok" if name != "b" else "error")
    bar.close()
    text = stream.getvalue()
    assert "3/3" in text and "1 failed" in text and "eta" in text
    assert BatchProgress(3, io.StringIO()).enabled is False  # not a TTY: no bar


# -- the command ---------------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_batch_exit_codes(tmp_path, capsys):
    wf = save_workflow(text_graph(), tmp_path / "wf.json")
    tags = tmp_path / "tags.txt"
    tags.write_text("left\nright\n")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "batch", str(wf), "--sweep", "div.b=1..3", "--sweep", f"cat.b=@{tags}",
                           "-o", str(out), "--quiet")
    assert code == 0, err
    assert "6 items (6 ok; 0 resumed)" in err
    assert len(list(out.glob("*.txt"))) == 6
    code, _, err = run_cli(capsys, "batch", str(wf), "--sweep", "div.b=1..3", "--sweep", f"cat.b=@{tags}",
                           "-o", str(out), "--quiet", "--resume")
    assert code == 0 and "6 resumed" in err
    # --zip pairs values; a failing item -> exit 1, recorded, others done.
    out2 = tmp_path / "out2"
    code, _, err = run_cli(capsys, "batch", str(wf), "--zip", "--sweep", "div.b=0,4", "--sweep", "cat.b=p,q",
                           "-o", str(out2), "--quiet")
    assert code == 1 and "item 0 (div.b=0_cat.b=p) error: node 'div', input 'b': floor_divide by zero" in err
    assert [e["status"] for e in read_manifest(out2)["items"]] == ["error", "ok"]


@pytest.mark.parametrize("sweep,expected", [
    ("div.b=abc..x", "'abc' is not a number"),
    ("ghost.b=1..3", "no node 'ghost'"),
    ("div.op=add,warp", "'warp' is not an available choice"),
])
def test_cli_batch_bad_input_exits_2_before_work(tmp_path, capsys, sweep, expected):
    wf = save_workflow(text_graph(), tmp_path / "wf.json")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "batch", str(wf), "--sweep", sweep, "-o", str(out), "--quiet")
    assert code == 2 and expected in err
    assert not out.exists()


def test_cli_resume_without_manifest_and_missing_model_exit_2(tmp_path, capsys):
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "batch", str(root / "workflows/txt2img.json"), "--resume", "-o", str(out))
    assert code == 2 and "no manifest.json" in err
    code, _, err = run_cli(capsys, "batch", str(root / "workflows/txt2img.json"), "--sweep",
                           "ckpt.ckpt_name=missing.safetensors", "--sweep", "sampler.seed=1..3",
                           "--models-dir", str(tmp_path / "models"), "-o", str(out), "--quiet")
    assert code == 2
    assert "node 'ckpt'" in err and "ckpt_name" in err and "missing.safetensors" in err
    assert not out.exists()


def test_help_of_new_commands_imports_neither_torch_nor_ray():
    import subprocess
    import sys

    code = ("import sys\nfrom nodegraph.cli import main\n"
            "for cmd in ('batch', 'serve'):\n"
            "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('torch', 'ray', 'nodegraph.server', 'nodegraph.distributed') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert "--sweep" in out.stdout and "--host" in out.stdout
    assert "HEAVY []" in out.stdout, out.stdout[-500:]


def test_sweeping_inputs_inside_a_subgraph_names_files_and_keeps_the_definition(tmp_path):
    from nodegraph.subgraph import extract

    reg = primitives_registry()
    g = text_graph()
    extract(g, reg, ["div", "txt", "cat", "save"], "body", instance_id="b")  # the save node is inside
    out = tmp_path / "out"
    result = run_batch(g, ["b/div.b=1..3", "b/cat.b=x,y"], executor=Executor(reg, output_dir=out),
                       output_dir=out, progress=False)
    m = result.manifest
    assert [e["status"] for e in m["items"]] == ["ok"] * 6
    for e in m["items"]:
        (rel,) = e["outputs"]
        assert (out / rel).read_text() == f"{12 // e['overrides']['b/div.b']}:{e['overrides']['b/cat.b']}"
        assert e["name"] in rel  # parameter-named, though the save node is inside the subgraph
    assert len({e["outputs"][0] for e in m["items"]}) == 6
    assert g.subgraphs["body"].graph.node("div").values["b"] == 2  # the shared definition is untouched
    with pytest.raises(BatchInvalid) as err:
        run_batch(g, ["b/div.b=1,abc"], executor=Executor(reg, output_dir=out),
                  output_dir=out, progress=False)
    assert "b/div" in str(err.value)
def test_resume_adopts_files_written_before_a_kill_instead_of_duplicating_them(tmp_path):
    """A kill between an item's file write and its manifest update leaves the file and a "pending"
    entry; the resume adopts the file (no second copy, the item does not run again)."""
    out = tmp_path / "out"
    first = run_batch(text_graph(), SWEEPS, registry=primitives_registry(), output_dir=out, progress=False)
    m = read_manifest(out)
    killed = m["items"][5]
    orphan = out / killed["outputs"][0]
    killed.update(status="pending", outputs=[], seconds=None, node_seconds=None)
    for later in m["items"][6:]:  # the batch never got to these: pending, no files
        (out / later["outputs"][0]).unlink()
        later.update(status="pending", outputs=[], seconds=None, node_seconds=None)
    (out / "manifest.json").write_text(json.dumps(m))
    again = run_batch(text_graph(), SWEEPS, registry=primitives_registry(), output_dir=out, progress=False)
    assert 5 in again.skipped and 5 not in again.outcomes
    assert sorted(again.outcomes) == [0, 1, 6, 7]
    assert again.manifest["items"][5]["outputs"] == [orphan.name] and orphan.exists()
    assert len(list(out.glob("*.txt"))) == 6  # no duplicate of the orphan
    assert manifest_core(again.manifest)["items"][5]["status"] == "ok"
    assert [e["outputs"] for e in again.manifest["items"]] == [e["outputs"] for e in first.manifest["items"]]


def test_a_failed_item_never_adopts_a_file(tmp_path):
    out = tmp_path / "out"
    run_batch(text_graph(), SWEEPS, registry=primitives_registry(), output_dir=out, progress=False)
    m = read_manifest(out)
    stray = out / f"result_{m['items'][0]['name']}_00001.txt"  # item 0 failed (division by zero)
    stray.write_text("not from this batch")
    again = run_batch(text_graph(), SWEEPS, registry=primitives_registry(), output_dir=out, progress=False)
    assert again.manifest["items"][0]["status"] == "error"


def test_progress_bar_shows_the_statistics_nodes_publish():
    """A pack's device-memory line (a NodeStats event) shows on the batch line, as on the run line."""
    from nodegraph.events import NodeStats

    stream = io.StringIO()
    bar = BatchProgress(2, stream, enabled=True)
    bar.start_item("a")
    bar(NodeStats(run_id="r", node_id="s", name="memory", data={"line": "device 16.4 MiB / 19.1 MiB (peak 16.4 MiB)"}))
    bar.finish_item("ok")
    assert "| memory: device 16.4 MiB / 19.1 MiB (peak 16.4 MiB)" in stream.getvalue()
    bar(NodeStats(run_id="r", node_id="s", name="memory", data={}))  # no line: nothing replaces the last one
    assert bar.stats == {"memory": "device 16.4 MiB / 19.1 MiB (peak 16.4 MiB)"}
