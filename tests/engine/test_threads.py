"""Thread policy (nodegraph.threads): parsing, precedence, the per-workload choice and the CLI's checks."""

from __future__ import annotations

import pytest
import torch

from nodegraph import cli
from nodegraph.threads import (
    ENV_VAR,
    SMALL_WORK,
    ThreadsError,
    available_cores,
    intra_op_threads,
    parse_threads,
    requested_threads,
    threads_for,
)


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("auto", None), (" AUTO ", None),
                                                 (0, None), ("0", None), (1, 1), ("3", 3), (8, 8)])
def test_parse_threads_accepts_counts_and_auto(value: object, expected: int | None) -> None:
    assert parse_threads(value) == expected


@pytest.mark.parametrize("value", ["two", "-1", -3, "1.5", True])
def test_parse_threads_rejects_other_values_naming_the_source(value: object) -> None:
    with pytest.raises(ThreadsError, match=r"--threads=.*positive number of threads or 'auto'"):
        parse_threads(value, "--threads")


def test_setting_beats_environment_beats_automatic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert requested_threads({}) is None
    assert threads_for(SMALL_WORK / 10, {}) == 1  # small work: one thread
    assert threads_for(SMALL_WORK * 10, {}) == available_cores()  # big work: every core we may use
    monkeypatch.setenv(ENV_VAR, "3")
    assert threads_for(SMALL_WORK / 10, {}) == 3
    assert threads_for(SMALL_WORK / 10, {"threads": 2}) == 2
    assert threads_for(SMALL_WORK * 10, {"threads": "auto"}) == available_cores()  # explicit auto beats env
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(ThreadsError, match=ENV_VAR):
        threads_for(1.0, {})


def test_intra_op_threads_restores_the_previous_count() -> None:
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with intra_op_threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), intra_op_threads(other):
        raise RuntimeError("node failed")
    assert torch.get_num_threads() == before


def test_cli_rejects_bad_thread_counts(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "workflows/txt2img.json", "--threads", "many"])
    assert exc.value.code == 2 and "--threads='many'" in capsys.readouterr().err
    monkeypatch.setenv(ENV_VAR, "-2")
    assert cli.main(["run", "workflows/txt2img.json"]) == cli.EXIT_INVALID
    assert f"{ENV_VAR}='-2'" in capsys.readouterr().err
