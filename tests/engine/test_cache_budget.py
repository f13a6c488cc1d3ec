"""The result cache's default budget follows the machine; --cache-budget (CLI, server, editor) sets it."""

from __future__ import annotations

import pytest

from nodegraph import Executor, Registry
from nodegraph.cli import _parser, _settings
from nodegraph.memory import available_memory, default_cache_budget, parse_size
from nodes import primitives


def _registry() -> Registry:
    reg = Registry()
    primitives.register(reg)
    return reg


def test_default_budget_is_half_the_available_ram_not_a_fixed_8_gib() -> None:
    available = available_memory()
    assert available is not None  # Linux: MemAvailable
    budget = Executor(_registry()).cache.budget_bytes
    # Available memory moves a little between the two reads: compare with a relative tolerance.
    assert budget == pytest.approx(available / 2, rel=0.05)
    assert default_cache_budget() == pytest.approx(budget, rel=0.05)


@pytest.mark.parametrize(("text", "expected"), [("4G", 4 * 2**30), ("512MiB", 512 * 2**20), ("1.5gb", 3 * 2**29),
                                                ("1000", 1000), ("0", 0), (2048, 2048)])
def test_sizes(text: object, expected: int) -> None:
    assert parse_size(text) == expected  # type: ignore[arg-type]


def test_percent_is_of_available_ram() -> None:
    assert parse_size("25%") == pytest.approx((available_memory() or 0) / 4, rel=0.05)


@pytest.mark.parametrize("bad", ["lots", "-1G", "150%", "4X", ""])
def test_bad_sizes_are_refused_with_the_forms(bad: str) -> None:
    with pytest.raises(ValueError, match="4G, 512M, 25%"):
        parse_size(bad)


@pytest.mark.parametrize("command", ["run", "batch", "serve"])
def test_cli_flag_reaches_the_executor_through_settings(command: str) -> None:
    argv = [command] + (["wf.json"] if command != "serve" else []) + ["--cache-budget", "300M"]
    settings = _settings(_parser().parse_args(argv))
    assert settings["cache_budget"] == "300M"
    assert Executor(_registry(), settings=settings).cache.budget_bytes == 300 * 2**20


def test_cli_refuses_a_bad_budget_with_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["run", "wf.json", "--cache-budget", "lots"])
    assert info.value.code == 2 and "4G, 512M" in capsys.readouterr().err


def test_server_option_sets_the_budget() -> None:
    from nodegraph.server.app import NodegraphServer

    server = NodegraphServer("127.0.0.1", 0, settings={"cache_budget": "64M"}, registry=_registry())
    try:
        assert server.executor.cache.budget_bytes == 64 * 2**20
    finally:
        server.httpd.server_close()
