"""Sweep specs: ranges, lists, @files, JSON lists; grid/zip expansion; item names."""

from __future__ import annotations

import pytest

from nodegraph.batch import item_name
from nodegraph.sweep import SweepError, expand, parse_sweep, parse_sweeps, parse_values


def test_ranges_are_inclusive_and_exact():
    assert parse_values("1..5") == [1, 2, 3, 4, 5]
    assert parse_values("5..1") == [5, 4, 3, 2, 1]
    assert parse_values("0..10:5") == [0, 5, 10]
    assert parse_values("1..10:4") == [1, 5, 9]  # the end is included only when the step lands on it
    # Decimal stepping: 0.1 + 0.1 + 0.1 in binary floats would miss 0.3 and drop the last value.
    assert parse_values("0.1..0.3:0.1") == [0.1, 0.2, 0.3]
    assert parse_values("4..6:0.5") == [4.0, 4.5, 5.0, 5.5, 6.0]
    assert all(isinstance(v, float) for v in parse_values("4..6:0.5"))
    assert all(type(v) is int for v in parse_values("-2..2"))
    assert parse_values("-2..2") == [-2, -1, 0, 1, 2]


@pytest.mark.parametrize("spec", ["abc..x", "1..x", "1..5:0", "1..5:-1", "1..5:y"])
def test_bad_ranges_are_refused_with_the_spec_in_the_message(spec):
    with pytest.raises(SweepError) as exc:
        parse_sweep(f"sampler.steps={spec}")
    assert spec in str(exc.value)


def test_lists_json_and_files(tmp_path):
    assert parse_values("euler, heun ,dpmpp_2m") == ["euler", "heun", "dpmpp_2m"]
    assert parse_values('["a, b", "c"]') == ["a, b", "c"]  # commas inside values need JSON
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\n  a blue square  \r\na star, yellow\n", encoding="utf-8")
    sweep = parse_sweep("positive.text=@prompts.txt", base_dir=tmp_path)
    assert sweep.values == ("a red circle", "  a blue square  ", "a star, yellow")  # blank lines skipped
    assert (sweep.node_id, sweep.input) == ("positive", "text")
    with pytest.raises(SweepError, match="cannot read"):
        parse_sweep("positive.text=@missing.txt", base_dir=tmp_path)
    assert parse_values("single value") == ["single value"]


def test_malformed_sweeps():
    for text in ("seed=1..3", "sampler.seed", ".seed=1", "sampler.=1"):
        with pytest.raises(SweepError):
            parse_sweep(text)
    with pytest.raises(SweepError, match="more than once"):
        parse_sweeps(["a.b=1,2", "a.b=3"])
    with pytest.raises(SweepError, match="no values"):
        parse_values("[]")


def test_grid_order_and_zip():
    sweeps = parse_sweeps(["s.seed=1..2", "s.cfg=4,5,6"])
    grid = expand(sweeps, "grid")
    assert len(grid) == 6
    assert grid[0] == {"s.seed": 1, "s.cfg": "4"} and grid[1] == {"s.seed": 1, "s.cfg": "5"}  # first sweep slowest
    assert grid[-1] == {"s.seed": 2, "s.cfg": "6"}
    with pytest.raises(SweepError, match="equal length"):
        expand(sweeps, "zip")
    zipped = expand(parse_sweeps({"s.seed": [1, 2, 3], "s.cfg": "4..6"}), "zip")
    assert zipped == [{"s.seed": 1, "s.cfg": 4}, {"s.seed": 2, "s.cfg": 5}, {"s.seed": 3, "s.cfg": 6}]
    assert expand([], "grid") == [{}]


def test_item_names_are_file_safe_and_distinct():
    labels = {"sampler.seed": "seed", "sampler.cfg": "cfg", "positive.text": "text"}
    assert item_name({"sampler.seed": 7, "sampler.cfg": 5.0}, labels) == "seed=7_cfg=5.0"
    a = item_name({"positive.text": "../../etc/passwd"}, labels)
    b = item_name({"positive.text": "../../etc/passwd!"}, labels)
    assert "/" not in a and ".." not in a and a != b
    long1 = item_name({"positive.text": "a very long prompt " * 10 + "one"}, labels)
    long2 = item_name({"positive.text": "a very long prompt " * 10 + "two"}, labels)
    assert long1 != long2 and len(long1) <= len("text=") + 32
