"""Caching unchanged subgraphs between runs: content-addressed keys, revert -> nothing re-runs, duplicate
branches run once, opt-outs and fingerprints, failures cache nothing, a byte-budgeted LRU."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from engine_nodes import calls, chain, diamond, make_executor, make_registry, reset_calls

from nodegraph import Graph, WorkflowInvalid, apply_overrides, build_plan
from nodegraph.cache import ENTRY_OVERHEAD, CacheEntry, ResultCache, sizeof


def test_unchanged_rerun_executes_nothing(tmp_path):
    ex = make_executor(tmp_path)
    g = chain(50)
    first = ex.run(g)
    assert len(first.executed()) == 50 and len(calls(ex)) == 50
    reset_calls(ex)
    second = ex.run(g)
    assert second.executed() == [] and calls(ex) == [] and len(second.cached()) == 50
    assert second.ui == first.ui == {"nout": {"value": 48}}
    assert all(r.seconds >= 0 for r in second.nodes.values())


def test_change_a_value_and_change_it_back_reruns_nothing(tmp_path):
    ex = make_executor(tmp_path)
    g = chain(20)
    ex.run(g)
    g.set_value("n10", "b", 5)
    reset_calls(ex)
    report = ex.run(g)
    assert calls(ex) == [f"n{i}" for i in range(10, 19)] + ["nout"]  # the node and its descendants
    assert report.ui["nout"]["value"] == 22
    g.set_value("n10", "b", 1)  # revert
    reset_calls(ex)
    report = ex.run(g)
    assert calls(ex) == [] and report.executed() == [] and report.ui["nout"]["value"] == 18


def test_only_the_changed_branch_and_its_descendants_rerun(tmp_path):
    ex = make_executor(tmp_path)
    g = diamond()  # c1 -> a -> s1 ; c2 -> a ; c2 -> b -> s2
    ex.run(g)
    g.set_value("c1", "value", 100)
    reset_calls(ex)
    report = ex.run(g)
    assert sorted(calls(ex)) == ["a", "c1", "s1"]
    assert sorted(report.cached()) == ["b", "c2", "s2"]
    g.set_value("c2", "value", 50)
    reset_calls(ex)
    report = ex.run(g)
    assert sorted(calls(ex)) == ["a", "b", "c2", "s1", "s2"]
    assert report.ui == {"s1": {"value": 150}, "s2": {"value": 60}}


def test_equal_values_hash_equal_after_coercion(tmp_path):
    """``--set c.value=5`` (text) and a file value 5 (int) are the same input: no re-run."""
    ex = make_executor(tmp_path)
    g = chain(4)
    ex.run(g)
    apply_overrides(g, ex.registry, ["n0.value=0"])
    reset_calls(ex)
    assert ex.run(g).executed() == [] and calls(ex) == []
    g2 = Graph()
    g2.add_node("primitives.float", {"value": 2}, id="f")
    g2.add_node("t.sink", id="s")
    g2.connect("f", "FLOAT", "s", "value")
    ex.run(g2)
    g2.set_value("f", "value", 2.0)
    assert ex.run(g2).executed() == []


def test_duplicate_identical_branches_run_once(tmp_path):
    g = chain(10, prefix="a")
    twin = chain(10, prefix="b")
    for n in twin:
        g.add_node(n.type, n.values, id=n.id)
    for lk in twin.links:
        g.connect(lk.src, lk.src_output, lk.dst, lk.dst_input)
    ex = make_executor(tmp_path)
    report = ex.run(g)
    ran = calls(ex)
    assert len(ran) == 10  # one branch computed ...
    assert len(report.executed()) == 10 and len(report.cached()) == 10  # ... the twin reused it in the same run
    assert report.ui == {"aout": {"value": 8}, "bout": {"value": 8}}


def test_cache_keys_do_not_depend_on_node_ids(tmp_path):
    ex = make_executor(tmp_path)
    ex.run(chain(30, prefix="first_"))
    reset_calls(ex)
    report = ex.run(chain(30, prefix="renamed_"))
    assert calls(ex) == [] and len(report.cached()) == 30
    reg = make_registry()
    k1 = build_plan(chain(30, prefix="x"), reg).keys
    k2 = build_plan(chain(30, prefix="y"), reg).keys
    assert [k1[f"x{i}"] for i in range(29)] == [k2[f"y{i}"] for i in range(29)]
    assert len(set(k1.values())) == 30  # every position in the chain has its own key


def test_key_depends_on_type_version_constants_and_which_output_is_read():
    reg = make_registry()
    g = Graph()
    g.add_node("t.two", {"value": 2}, id="t")
    g.add_node("t.sink", id="s")
    g.connect("t", "double", "s", "value")
    key_double = build_plan(g, reg).keys["s"]
    g.connect("t", "triple", "s", "value")
    assert build_plan(g, reg).keys["s"] != key_double
    g.set_value("t", "value", 3)
    k3 = build_plan(g, reg).keys
    g.set_value("t", "value", 2)
    assert build_plan(g, reg).keys["t"] != k3["t"]
    reg2 = make_registry()
    reg2._specs["t.two"] = dataclasses.replace(reg["t.two"], version=2)  # a new behaviour of the type
    assert build_plan(g, reg2).keys["t"] != build_plan(g, reg).keys["t"]


def test_non_deterministic_node_reruns_with_its_descendants_only(tmp_path):
    g = Graph()
    g.add_node("t.random", id="r")
    g.add_node("t.add", {"b": 1}, id="plus")
    g.connect("r", "INT", "plus", "a")
    g.add_node("t.sink", id="s_rand")
    g.connect("plus", "INT", "s_rand", "value")
    g.add_node("t.random", id="r2")  # a second identical random node is not merged with the first
    g.add_node("t.sink", id="s_rand2")
    g.connect("r2", "INT", "s_rand2", "value")
    g.add_node("t.const", {"value": 3}, id="c")
    g.add_node("t.sink", id="s_const")
    g.connect("c", "INT", "s_const", "value")
    ex = make_executor(tmp_path)
    first = ex.run(g)
    assert {"r", "r2"} <= set(calls(ex))  # both random nodes ran ...
    assert first.ui["s_rand"]["value"] - 1 != first.ui["s_rand2"]["value"]  # ... and gave different values
    reset_calls(ex)
    second = ex.run(g)
    assert sorted(calls(ex)) == ["plus", "r", "r2", "s_rand", "s_rand2"]
    assert sorted(second.cached()) == ["c", "s_const"]
    assert second.ui["s_rand"]["value"] != first.ui["s_rand"]["value"]


def test_fingerprint_change_reruns_and_same_content_is_cached(tmp_path):
    data = tmp_path / "prompt.txt"
    data.write_text("a cat")
    g = Graph()
    g.add_node("t.read", {"path": str(data)}, id="r")
    g.add_node("primitives.case", {"case": "upper"}, id="up")
    g.connect("r", "STRING", "up", "text")
    g.add_node("t.sink", id="s")
    g.connect("up", "STRING", "s", "value")
    ex = make_executor(tmp_path)
    assert ex.run(g).ui["s"]["value"] == "A CAT"
    reset_calls(ex)
    assert ex.run(g).executed() == []
    data.write_text("a dog")  # same node values, different file content
    report = ex.run(g)
    assert report.ui["s"]["value"] == "A DOG" and sorted(report.executed()) == ["r", "s", "up"]
    data.write_text("a cat")  # back to the first content: cached again
    reset_calls(ex)
    assert ex.run(g).executed() == [] and calls(ex) == []


def test_failed_node_caches_nothing_and_upstream_stays_cached(tmp_path):
    g = chain(4)
    g.add_node("t.fail", id="f")
    g.connect("n2", "INT", "f", "x")
    g.add_node("t.sink", id="sf")
    g.connect("f", "INT", "sf", "value")
    ex = make_executor(tmp_path, settings={"fail": True})
    assert ex.run(g).status == "error"
    keys = ex.plan(g).keys
    assert all(keys[n] in ex.cache for n in ("n0", "n1", "n2"))
    assert keys["f"] not in ex.cache and keys["sf"] not in ex.cache
    ex.settings["fail"] = False
    reset_calls(ex)
    report = ex.run(g)
    assert report.ok and sorted(calls(ex)) == ["f", "nout", "sf"]


# -- the byte budget ---------------------------------------------------------------------------------------------


def _bigs() -> Graph:
    g = Graph()
    for k in (1, 2, 3):
        g.add_node("t.big", {"seed": k, "kbytes": 100}, id=f"b{k}")
        g.add_node("t.sink", id=f"s{k}")
        g.connect(f"b{k}", "array", f"s{k}", "value")
    return g


def test_lru_budget_in_bytes_evicts_least_recently_used(tmp_path):
    ex = make_executor(tmp_path, cache_bytes=250_000)  # room for two 100 kB arrays
    g = _bigs()
    keys = ex.plan(g).keys
    for k in (1, 2, 3):
        assert ex.run(g, outputs=[f"b{k}"]).ok  # any node may be requested, not only output nodes
        assert ex.cache.nbytes <= 250_000
    assert keys["b1"] not in ex.cache and keys["b2"] in ex.cache and keys["b3"] in ex.cache
    assert ex.cache.evictions == 1
    reset_calls(ex)
    report = ex.run(g, outputs=["b2"])  # touch b2: b3 becomes the least recently used
    assert calls(ex) == [] and report.results["b2"]["array"].nbytes == 100_000
    ex.run(g, outputs=["b1"])  # b1 comes back and pushes b3 out
    assert calls(ex) == ["b1"]
    assert keys["b1"] in ex.cache and keys["b2"] in ex.cache and keys["b3"] not in ex.cache
    assert ex.cache.nbytes <= 250_000
    assert ex.cache.nbytes == sum(ex.cache._entries[k].nbytes for k in ex.cache.keys())


def test_lowering_the_budget_evicts_least_recently_used_at_once(tmp_path):
    ex = make_executor(tmp_path, cache_bytes=10_000_000)
    g = _bigs()
    keys = ex.plan(g).keys
    for k in (1, 2, 3):
        assert ex.run(g, outputs=[f"b{k}"]).ok
    assert all(keys[f"b{k}"] in ex.cache for k in (1, 2, 3))
    ex.cache.set_budget(250_000)  # the editor's preference changed between runs
    assert ex.cache.nbytes <= 250_000 and ex.cache.budget_bytes == 250_000
    assert keys["b1"] not in ex.cache and keys["b2"] in ex.cache and keys["b3"] in ex.cache
    ex.cache.set_budget(10_000_000)  # raising it drops nothing
    assert keys["b2"] in ex.cache and keys["b3"] in ex.cache


def test_evicted_upstream_is_not_recomputed_when_everything_after_it_is_cached(tmp_path):
    """E.g. a checkpoint loader pushed out of the budget by another model: re-running an unchanged workflow
    whose outputs are cached must not reload it."""
    ex = make_executor(tmp_path, cache_bytes=150_000)
    g = _bigs()
    g.add_node("primitives.show", id="show1")  # small display data (the text of the array)
    g.connect("b1", "array", "show1", "value")
    assert ex.run(g, outputs=["show1"]).ok
    ex.run(g, outputs=["b2"])  # evicts b1 (least recently used), show1 stays
    keys = ex.plan(g).keys
    assert keys["b1"] not in ex.cache and keys["show1"] in ex.cache
    reset_calls(ex)
    events = []
    report = ex.run(g, outputs=["show1"], on_event=events.append)
    assert report.ok and calls(ex) == []
    assert {n: r.status for n, r in report.nodes.items()} == {"b1": "cached", "show1": "cached"}
    assert [(e.node_id, e.status) for e in events if e.kind == "node_finished"] == [("b1", "cached"),
                                                                                     ("show1", "cached")]
    assert report.ui["show1"]["text"].startswith("[1. 1. 1.")
    # once something new reads it, the evicted node is needed again and recomputed
    g.add_node("primitives.to_string", id="text")
    g.connect("b1", "array", "text", "value")
    g.add_node("t.sink", id="s_text")
    g.connect("text", "STRING", "s_text", "value")
    reset_calls(ex)
    report = ex.run(g, outputs=["s_text"])
    assert report.ok and calls(ex) == ["b1", "s_text"]  # (to_string does not log calls)
    assert report.executed() == ["b1", "text", "s_text"]


def test_entry_larger_than_the_budget_is_used_but_not_kept(tmp_path):
    ex = make_executor(tmp_path, cache_bytes=50_000)
    g = _bigs()
    report = ex.run(g, outputs=["s1"])
    assert report.ok and "b1" in calls(ex)
    assert ex.plan(g).keys["b1"] not in ex.cache and ex.cache.nbytes <= 50_000
    reset_calls(ex)
    ex.run(g, outputs=["s1"])
    assert "b1" in calls(ex)  # had to be recomputed: it never fit


def test_result_cache_lru_order_and_accounting():
    cache = ResultCache(budget_bytes=300)
    for key in "abc":
        assert cache.put(key, CacheEntry((), nbytes=100))
    assert list(cache.keys()) == ["a", "b", "c"] and cache.nbytes == 300
    assert cache.get("a") is not None  # a is now most recent
    cache.put("d", CacheEntry((), nbytes=100))
    assert list(cache.keys()) == ["c", "a", "d"] and cache.evictions == 1
    cache.put("c", CacheEntry((), nbytes=150))  # replacing an entry re-counts its size
    assert list(cache.keys()) == ["d", "c"] and cache.nbytes == 250
    assert not cache.put("huge", CacheEntry((), nbytes=301)) and "huge" not in cache
    cache.discard("c")
    assert cache.nbytes == 100 and len(cache) == 1
    assert cache.get("missing") is None and (cache.hits, cache.misses) == (1, 1)
    cache.clear()
    assert cache.nbytes == 0 and len(cache) == 0
    with pytest.raises(ValueError):
        ResultCache(-1)


def test_sizeof_counts_arrays_images_and_shared_objects_once():
    a = np.zeros((100, 100), dtype=np.float32)
    assert sizeof(a) == 40_000
    assert 80_000 <= sizeof((a, np.ones(10_000, np.float32))) < 80_200
    assert sizeof((a, a, [a, {"x": a}])) < 41_000  # the same array referenced 4 times counts once
    view_owner = {"latent": {"samples": a, "noise_mask": None}}
    assert 40_000 <= sizeof(view_owner) < 41_000

    class Declared:
        def __nodegraph_nbytes__(self) -> int:
            return 12_345

    assert sizeof(Declared()) == 12_345
    pytest.importorskip("PIL")
    from PIL import Image

    assert sizeof(Image.new("RGB", (64, 32))) == 64 * 32 * 3


# -- outputs are confined to the output folder, and cached ----------------------------------------------------------


def _save_graph(prefix: str) -> Graph:
    g = Graph()
    g.add_node("primitives.string", {"value": "hello"}, id="txt")
    g.add_node("primitives.save_text", {"filename_prefix": prefix}, id="save")
    g.connect("txt", "STRING", "save", "text")
    return g


@pytest.mark.parametrize("prefix", ["../x", "/abs/path", "a/../../b", "C:/windows/x", "..\\x", "sub/../../../etc/x"])
def test_save_text_refuses_paths_outside_the_output_dir(tmp_path, prefix):
    ex = make_executor(tmp_path)
    with pytest.raises(WorkflowInvalid) as info:  # refused by validation, before anything runs
        ex.run(_save_graph(prefix))
    [issue] = info.value.issues
    assert (issue.node_id, issue.input) == ("save", "filename_prefix")
    assert "outside the output folder" in issue.message and repr(prefix) in issue.message
    written = [p for p in tmp_path.rglob("*.txt")]
    assert written == []


@pytest.mark.parametrize("prefix", [".", "./", "./."])
def test_save_text_refuses_a_prefix_naming_the_output_dir_itself(tmp_path, prefix):
    """``"."`` resolves to the output folder, whose own name would become the stem of a file written
    next to it -- outside the folder."""
    with pytest.raises(WorkflowInvalid) as info:
        make_executor(tmp_path).run(_save_graph(prefix))
    [issue] = info.value.issues
    assert issue.input == "filename_prefix" and "names the output folder itself" in issue.message
    assert list(tmp_path.rglob("*.txt")) == []


def test_save_text_refuses_a_symlink_that_leaves_the_output_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, out / "link")
    report = make_executor(tmp_path).run(_save_graph("link/x"))
    assert report.status == "error" and report.error.input == "filename_prefix"
    assert "resolves outside the output folder" in report.error.message
    assert list(outside.iterdir()) == []


def test_save_text_writes_inside_is_cached_and_rewrites_a_deleted_file(tmp_path):
    ex = make_executor(tmp_path)
    g = _save_graph("notes/day")
    report = ex.run(g)
    assert report.ok
    path = Path(report.outputs[0])
    assert path == (tmp_path / "out" / "notes" / "day_00001.txt").resolve()
    assert path.read_text() == "hello"
    again = ex.run(g)
    assert again.executed() == [] and again.outputs == report.outputs  # no duplicate file
    assert sorted(p.name for p in path.parent.iterdir()) == ["day_00001.txt"]
    path.unlink()  # the cached result is no longer valid
    third = ex.run(g)
    assert third.executed() == ["save"] and Path(third.outputs[0]).read_text() == "hello"
    g.set_value("txt", "value", "bye")
    fourth = ex.run(g)
    assert Path(fourth.outputs[0]).name == "day_00002.txt"  # never overwrites an earlier result


def test_display_data_counts_towards_the_budget():
    """A preview image held in ``ui`` stays in RAM as long as the entry: it must be counted."""
    cache = ResultCache(budget_bytes=50_000)
    preview = np.zeros(100_000, np.uint8)
    assert not cache.put("k", CacheEntry((), ui={"preview": preview}))
    assert len(cache) == 0 and cache.nbytes == 0
    assert cache.put("small", CacheEntry((1,), ui={"text": "hi"}))
    assert ENTRY_OVERHEAD < cache.nbytes < ENTRY_OVERHEAD + 1_000  # the data, plus what keeping an entry costs


def test_cache_keys_cost_constant_work_per_node(monkeypatch):
    """Each key is hashed once from its parents' fixed-size keys: total hashing is O(N), not the
    O(N^2) of re-hashing every node's whole ancestry."""
    import hashlib

    import nodegraph.plan as plan_module

    stats = {"hashers": 0, "bytes": 0}

    class CountingHashlib:
        @staticmethod
        def blake2b(**kw):
            stats["hashers"] += 1
            real = hashlib.blake2b(**kw)

            class Counting:
                def update(self, data: bytes) -> None:
                    stats["bytes"] += len(data)
                    real.update(data)

                def hexdigest(self) -> str:
                    return real.hexdigest()

            return Counting()

    monkeypatch.setattr(plan_module, "hashlib", CountingHashlib)
    reg = make_registry()
    per_size = {}
    for n in (1_000, 4_000):
        stats.update(hashers=0, bytes=0)
        build_plan(chain(n), reg)
        per_size[n] = dict(stats)
        assert stats["hashers"] == n  # one hash per node per plan
    assert per_size[4_000]["bytes"] <= 4.01 * per_size[1_000]["bytes"]


def test_sizeof_counts_torch_tensors_and_modules():
    torch = pytest.importorskip("torch")
    t = torch.zeros(10, 20, dtype=torch.float16)
    assert sizeof(t) == 400
    lin = torch.nn.Linear(10, 10)  # 100 weights + 10 biases, fp32
    lin.register_buffer("stat", torch.zeros(5))
    assert sizeof(lin) == 4 * (110 + 5)
    assert sizeof({"model": lin, "again": lin, "w": lin.weight}) < 4 * 115 + 1_000
