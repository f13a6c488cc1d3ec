"""Bad input through the ``nodegraph`` command: every case must end in one clear message on stderr that names
what is wrong (file, node, input or flag) and how to fix it, exit with a non-zero code, and never show a Python
traceback.  Tiny primitive workflows keep this fast; the diffusion cases only validate (no model is loaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nodegraph.cli import main

ROOT = Path(__file__).resolve().parents[2]
TXT2IMG = ROOT / "workflows" / "txt2img.json"
NODEGRAPH = Path(sys.executable).parent / "nodegraph"


def doc(nodes: dict[str, Any], links: list[tuple[tuple[str, str], tuple[str, str]]] = ()) -> dict[str, Any]:
    """A version-1 workflow document from ``{id: {"type", "values"}}`` and ``((src, out), (dst, in))`` links."""
    return {
        "format": "nodegraph.workflow",
        "version": 1,
        "nodes": nodes,
        "links": [{"from": list(a), "to": list(b)} for a, b in links],
    }


SAVE_TEXT = doc(
    {
        "num": {"type": "primitives.int", "values": {"value": 3}},
        "txt": {"type": "primitives.to_string", "values": {}},
        "save": {"type": "primitives.save_text", "values": {"filename_prefix": "r"}},
    },
    [(("num", "INT"), ("txt", "value")), (("txt", "STRING"), ("save", "text"))],
)


def write(tmp_path: Path, name: str, content: dict[str, Any] | str) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    """Run ``main(argv)`` in-process; returns (exit code, stdout + stderr).  argparse usage errors
    raise SystemExit, which a real process turns into its exit code, so that counts too."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: usage error
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out + out.err


def assert_clear_error(code: int, text: str, *needles: str) -> None:
    assert code != 0, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, f"{needle!r} missing from:\n{text}"


# -- the workflow file itself ---------------------------------------------------------------------------------


def test_nonexistent_workflow_names_the_path(tmp_path, capsys):
    missing = tmp_path / "no_such_workflow.json"
    code, text = cli(capsys, "run", missing, "-o", tmp_path / "out", "--quiet")
    assert_clear_error(code, text, str(missing), "file not found", "check the path")
    assert code == 2 and not (tmp_path / "out").exists()


def test_directory_instead_of_file_suggests_the_files_inside(tmp_path, capsys):
    folder = tmp_path / "flows"
    folder.mkdir()
    write(folder, "mine.json", SAVE_TEXT)
    code, text = cli(capsys, "validate", folder)
    assert_clear_error(code, text, str(folder), "is a folder, not a workflow file", "mine.json")


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ('{"nodes": {"a": {"type": "primitives.int",}}}', ["not valid JSON (line 1, column", "trailing comma"]),
        ("", ["the file is empty", "nodegraph workflow"]),
        ("[1, 2, 3]", ["must be a JSON object", "a JSON list", "ComfyUI workflow"]),
        ('{"hello": "world"}', ["not a workflow", "no 'nodes'", "'hello'"]),
        (json.dumps({"format": "nodegraph.workflow", "version": 1, "nodes": []}), ["'nodes' must be an object"]),
    ],
    ids=["invalid-json", "empty", "json-list", "json-without-nodes", "nodes-not-an-object"],
)
def test_file_that_is_not_a_workflow(tmp_path, capsys, content, needles):
    path = write(tmp_path, "wf.json", content)
    code, text = cli(capsys, "run", path, "-o", tmp_path / "out", "--quiet")
    assert_clear_error(code, text, str(path), *needles)
    assert code == 2


def test_binary_file_is_neither_json_nor_png(tmp_path, capsys):
    path = tmp_path / "blob.json"
    path.write_bytes(b"\x89\xff\x00\x01binary")
    code, text = cli(capsys, "validate", path)
    assert_clear_error(code, text, str(path), "neither JSON text nor a PNG")


# -- the graph ------------------------------------------------------------------------------------------------


def test_unknown_node_type_names_node_and_type(tmp_path, capsys):
    wf = write(
        tmp_path,
        "wf.json",
        doc(
            {**SAVE_TEXT["nodes"], "x": {"type": "nopack.mystery"}},
            [(("num", "INT"), ("txt", "value")), (("txt", "STRING"), ("save", "text"))],
        ),
    )
    code, text = cli(capsys, "run", wf, "-o", tmp_path / "out", "--quiet")
    assert_clear_error(code, text, "node 'x' (nopack.mystery)", "unknown node type", "install the node pack")
    assert code == 2 and not (tmp_path / "out").exists()  # nothing ran


def test_link_from_a_missing_node(tmp_path, capsys):
    wf = write(
        tmp_path,
        "wf.json",
        doc(SAVE_TEXT["nodes"], [(("ghost", "INT"), ("txt", "value")), (("txt", "STRING"), ("save", "text"))]),
    )
    code, text = cli(capsys, "validate", wf)
    assert_clear_error(
        code,
        text,
        "node 'txt'",
        "input 'value'",
        "refers to node 'ghost', which does not exist",
        "delete the link or restore the missing node",
    )


def test_missing_required_input(tmp_path, capsys):
    wf = write(tmp_path, "wf.json", doc(SAVE_TEXT["nodes"], [(("txt", "STRING"), ("save", "text"))]))
    code, text = cli(capsys, "run", wf, "-o", tmp_path / "out", "--quiet")
    assert_clear_error(
        code, text, "node 'txt' (primitives.to_string) input 'value'", "is not connected", "link an output"
    )


def test_wrong_typed_link_image_into_latent(capsys, tmp_path):
    wf = json.loads(TXT2IMG.read_text())
    for link in wf["links"]:
        if link["to"] == ["sampler", "latent_image"]:
            link["from"] = ["decode", "IMAGE"]
    code, text = cli(capsys, "validate", write(tmp_path, "wf.json", wf))
    assert_clear_error(
        code,
        text,
        "node 'sampler' (diffusion.ksampler) input 'latent_image'",
        "expects LATENT",
        "output 'IMAGE' of node 'decode'",
        "connect an output of type LATENT",
    )


def test_out_of_range_and_mistyped_values_in_the_file(capsys, tmp_path):
    wf = json.loads(TXT2IMG.read_text())
    wf["nodes"]["sampler"]["values"].update(steps=-1, cfg="high")
    code, text = cli(capsys, "validate", write(tmp_path, "wf.json", wf))
    assert_clear_error(
        code,
        text,
        "2 problem(s)",
        "input 'steps': value -1 is outside [1, 10000]",
        "between 1 and 10000",
        "input 'cfg': value 'high' is invalid: 'high' is not a number",
        "give 'cfg' a number from",
    )
    assert "invalid literal" not in text and "could not convert" not in text  # Python's words, not ours


def test_unknown_checkpoint_lists_the_available_ones(capsys):
    code, text = cli(capsys, "validate", TXT2IMG, "--set", "ckpt.ckpt_name=sd15-nope.safetensors")
    assert_clear_error(
        code,
        text,
        "node 'ckpt' (diffusion.checkpoint_loader) input 'ckpt_name'",
        "'sd15-nope.safetensors' is not an available choice",
        "nodegraph-shapes-v1.safetensors",
        "--models-dir",
    )


# -- --set overrides ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("sampler.steps", ["'sampler.steps' must look like NODE.INPUT=VALUE", "no '=VALUE'"]),
        ("steps=3", ["'steps=3' must look like NODE.INPUT=VALUE", "no node id"]),
        ("sampler.=3", ["no input name"]),
        ("ghost.seed=1", ["no node 'ghost' in this workflow", "sampler", "use one of these ids"]),
        ("sampler.nope=1", ["node 'sampler' (diffusion.ksampler) has no settable input 'nope'", "steps, cfg"]),
        ("sampler.cfg=high", ["input 'cfg': cannot use 'high': 'high' is not a number", "e.g. sampler.cfg="]),
        ("sampler.steps=2.5", ["input 'steps'", "whole number"]),
        ("sampler.steps=-1", ["input 'steps': value -1 is outside [1, 10000]"]),
    ],
)
def test_bad_overrides(capsys, override, needles):
    code, text = cli(capsys, "validate", TXT2IMG, "--set", override)
    assert_clear_error(code, text, str(TXT2IMG), *needles)
    assert code == 2


# -- output paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["-o", "{file}"], ["-o/--output-dir", "it is a file, not a folder"]),
        (["-o", "{file}/sub"], ["-o/--output-dir", "is a file, so no folder can be created inside it"]),
        (["-o", "{tmp}/out", "--report", "{tmp}"], ["--report", "it is a folder, not a file name"]),
        (["-o", "{tmp}/out", "--report", "{file}/r.json"], ["--report", "no folder can be created"]),
    ],
    ids=["outdir-is-file", "outdir-under-file", "report-is-folder", "report-under-file"],
)
def test_unwritable_output_is_refused_before_any_work(tmp_path, capsys, args, needles):
    wf = write(tmp_path, "wf.json", SAVE_TEXT)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    argv = [a.format(file=blocker, tmp=tmp_path) for a in args]
    code, text = cli(capsys, "run", wf, *argv, "--quiet")
    assert_clear_error(code, text, *needles)
    assert code == 2 and not list(tmp_path.rglob("r_*.txt"))  # the Save node never ran


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_output_folder(tmp_path, capsys):
    wf = write(tmp_path, "wf.json", SAVE_TEXT)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, text = cli(capsys, "run", wf, "-o", locked / "out", "--quiet")
    finally:
        locked.chmod(0o755)
    assert_clear_error(code, text, "-o/--output-dir", "is not writable")


def test_export_comfy_into_a_folder(tmp_path, capsys):
    code, text = cli(capsys, "export-comfy", TXT2IMG, "-o", tmp_path)
    assert_clear_error(code, text, "-o/--output", "it is a folder, not a file name")


# -- batch sweeps ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sweeps", "needles"),
    [
        (["num.value"], ["sweep 'num.value' must look like NODE.INPUT=VALUES"]),
        (["num.value=1..x"], ["'x' is not a number"]),
        (["num.value=1..3:0"], ["step 0"]),
        (["num.value=[1,2"], ["not a valid JSON list"]),
        (["num.value=@{tmp}/missing.txt"], ["cannot read", "missing.txt"]),
        (["ghost.value=1,2"], ["no node 'ghost' in this workflow"]),
        (["num.value=a,b"], ["node 'num' (primitives.int) input 'value': cannot use 'a'", "whole number"]),
        (["--zip", "num.value=1,2", "save.filename_prefix=a,b,c"], ["--zip needs sweeps of equal length"]),
    ],
    ids=[
        "no-values",
        "bad-range",
        "zero-step",
        "bad-json-list",
        "missing-file",
        "unknown-node",
        "bad-value",
        "zip-lengths",
    ],
)
def test_malformed_batch_sweeps(tmp_path, capsys, sweeps, needles):
    wf = write(tmp_path, "wf.json", SAVE_TEXT)
    argv: list[str] = []
    for s in sweeps:
        argv += [s] if s.startswith("--") else ["--sweep", s.format(tmp=tmp_path)]
    code, text = cli(capsys, "batch", wf, *argv, "-o", tmp_path / "out", "--quiet")
    assert_clear_error(code, text, *needles)
    assert code == 2 and not (tmp_path / "out" / "manifest.json").exists()


def test_batch_output_folder_that_is_a_file(tmp_path, capsys):
    wf = write(tmp_path, "wf.json", SAVE_TEXT)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, text = cli(capsys, "batch", wf, "--sweep", "num.value=1,2", "-o", blocker, "--quiet")
    assert_clear_error(code, text, "-o/--output-dir", "it is a file, not a folder")


# -- serve, device ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "needle"),
    [("-1", "-1 is out of range"), ("70000", "70000 is out of range"), ("http", "'http' is not a port number")],
)
def test_serve_rejects_invalid_ports_before_binding(capsys, port, needle):
    code, text = cli(capsys, "serve", "--port", port)
    assert_clear_error(code, text, "--port", needle, "1-65535")
    assert code == 2


def test_unavailable_accelerator_is_refused_before_loading_a_model(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, text = cli(capsys, "run", TXT2IMG, "--device", "cuda", "-o", tmp_path / "out", "--quiet")
    assert_clear_error(code, text, "--device cuda", "no CUDA", "--device cpu")
    assert code == 2 and not (tmp_path / "out").exists()


# -- the real console script: exit codes and stderr as a shell sees them ----------------------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "{tmp}/nope.json"], "file not found"),
        (["run", "{tmp}/wf.json", "-o", "{tmp}/wf.json"], "it is a file, not a folder"),
        (["serve", "--port", "70000"], "70000 is out of range"),
    ],
)
def test_console_script_prints_no_traceback(tmp_path, argv, needle):
    if not NODEGRAPH.exists():
        pytest.skip("console script not installed")
    write(tmp_path, "wf.json", SAVE_TEXT)
    proc = subprocess.run(
        [str(NODEGRAPH), *(a.format(tmp=tmp_path) for a in argv)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and needle in proc.stderr
