"""Device-memory manager on an emulated device: budgets, streaming, LRU eviction, drop and reload."""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.memory import ComputeDevice, MemoryBudgetError, MemoryManager, parse_budget, resolve_budget
from nodes.diffusion.quant.gguf_file import read_gguf
from nodes.diffusion.quant.gguf_write import write_gguf
from nodes.diffusion.quant.layers import load_quantized
from tests.diffusion.quant_fixtures import build, meta_model, numpy_state, random_state, sample_input


def _nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _home_ptrs(module: torch.nn.Module) -> set[int]:
    return {t.data_ptr() for t in [*module.parameters(), *module.buffers()]}


class PeakProbe:
    """Records the manager's accounted device bytes while each block runs (forward hooks)."""

    def __init__(self, manager: MemoryManager, blocks) -> None:
        self.seen: list[int] = []
        for b in blocks:
            b.register_forward_hook(lambda *_: self.seen.append(manager.resident))


def test_model_three_times_the_budget_streams_within_budget_and_bitwise_equal() -> None:
    depth = 12
    sd = random_state(depth=depth, seed=11)
    x = sample_input()
    expected = build(sd, depth)(x)

    model = build(sd, depth)
    budget = _nbytes(model) // 3
    home = _home_ptrs(model)
    mm = MemoryManager(ComputeDevice.emulated_device(), budget)
    handle = mm.register("net", model)
    probe = PeakProbe(mm, model.blocks)
    for _ in range(2):  # a second step streams again from the home copies
        with mm.use(handle) as net:
            got = net(x)
        assert torch.equal(got, expected)
    assert handle.state == "streaming" and 0 < len(handle.streamed) < depth
    assert handle.transfers == 2 * len(handle.streamed)
    assert mm.peak <= budget
    assert max(probe.seen) > handle.rest.nbytes  # blocks really were on the device while running
    # between runs only the resident part is accounted; the streamed blocks point at their home copies
    resident_blocks = [b for i, b in enumerate(handle.blocks) if i not in handle.streamed]
    assert mm.resident == handle.rest.nbytes + sum(b.nbytes for b in resident_blocks)
    assert _home_ptrs(model.blocks[handle.streamed[-1]]) <= home
    assert not _home_ptrs(model.blocks[0]) & home  # a resident block runs from its device copy

    mm.evict(handle)
    assert mm.resident == 0 and _home_ptrs(model) == home and torch.equal(model(x), expected)


def test_streaming_without_prefetch_needs_one_block_window() -> None:
    depth = 6
    model = build(random_state(depth=depth, seed=12), depth)
    block = sum(t.numel() * 4 for t in model.blocks[0].parameters())
    rest = _nbytes(model) - depth * block
    x = sample_input()
    expected = model(x)
    with_prefetch = MemoryManager(ComputeDevice.emulated_device(), rest + block + block // 2)
    with pytest.raises(MemoryBudgetError, match="streaming window"):
        with_prefetch.load(with_prefetch.register("net", model))
    assert with_prefetch.resident == 0
    mm = MemoryManager(ComputeDevice.emulated_device(), rest + block + block // 2, prefetch=False)
    handle = mm.register("net", model)
    with mm.use(handle) as net:
        assert torch.equal(net(x), expected)
    assert mm.peak == rest + block and handle.streamed == list(range(depth))


def test_lru_eviction_order_and_text_encoder_leaving_the_device() -> None:
    models = {n: build(random_state(depth=1, seed=i), 1) for i, n in enumerate("abc")}
    size = _nbytes(models["a"])
    mm = MemoryManager(ComputeDevice.emulated_device(), int(size * 2.5))
    h = {n: mm.register(n, m) for n, m in models.items()}
    for name in ("a", "b", "a"):
        mm.load(h[name])
    assert mm.resident == 2 * size
    mm.load(h["c"])  # b is least recently used
    assert [h[n].state for n in "abc"] == ["device", "offloaded", "device"]
    mm.load(h["b"])  # now a is
    assert [h[n].state for n in "abc"] == ["offloaded", "device", "device"]
    mm.evict(h["c"])  # e.g. a text encoder after encoding
    stats = mm.stats()
    assert (stats.resident, stats.offloaded, stats.peak) == (size, 2 * size, 2 * size)
    assert "offloaded" in stats.line() and "peak" in stats.line()


def test_dropped_model_is_reloaded_from_its_memory_mapped_file(tmp_path) -> None:
    paths = {}
    for i, name in enumerate("ab"):
        paths[name] = tmp_path / f"{name}.gguf"
        write_gguf(paths[name], numpy_state(random_state(depth=2, seed=20 + i)), 8)

    def loader(name: str):
        return lambda: load_quantized(meta_model(2), read_gguf(paths[name]).state_dict, name=name)

    x = sample_input()
    outputs = {n: loader(n)()(x) for n in "ab"}
    calls = []

    def counted(name: str):
        def reload():
            calls.append(name)
            return loader(name)()
        return reload

    first = loader("a")()
    size = _nbytes(first)
    mm = MemoryManager(ComputeDevice.emulated_device(), int(size * 1.5), offload_budget=0)
    ha = mm.register("a", first, reload=counted("a"))
    hb = mm.register("b", loader("b")(), reload=counted("b"))
    with mm.use(ha) as net:
        assert torch.equal(net(x), outputs["a"])
    with mm.use(hb) as net:  # a is evicted, and dropped since nothing may stay offloaded
        assert torch.equal(net(x), outputs["b"])
    assert ha.state == "dropped" and all(p.is_meta for p in first.parameters())
    assert mm.stats().offloaded == 0
    with mm.use(ha) as net:
        assert torch.equal(net(x), outputs["a"])
    assert calls == ["a"] and hb.state == "dropped"
    assert first.blocks[0].fc1.storage.dtype == torch.uint8  # still quantized after the reload


def test_quantized_model_streams_and_accounts_its_storage_bytes(tmp_path) -> None:
    depth = 9
    path = tmp_path / "q8.gguf"
    write_gguf(path, numpy_state(random_state(depth=depth, seed=30)), 8)
    model = load_quantized(meta_model(depth), read_gguf(path).state_dict, name="q8")
    x = sample_input()
    expected = model(x)
    size = _nbytes(model)
    mm = MemoryManager(ComputeDevice.emulated_device(), size // 2)
    handle = mm.register("q8", model)
    assert handle.nbytes == size  # quantized bytes, not fp32 bytes
    with mm.use(handle) as net:
        assert torch.equal(net(x), expected)
    assert handle.streamed and mm.peak <= size // 2


def test_budget_parsing() -> None:
    assert parse_budget("6GB") == 6 * 1000**3 and parse_budget("512MiB") == 512 * 1024**2
    assert parse_budget(1234) == 1234 and parse_budget("1.5 gib") == int(1.5 * 1024**3)
    assert parse_budget(None) is None and parse_budget("unlimited") is None and parse_budget("auto") == "auto"
    for bad in ("lots", "-3GB", "6 parsecs", 0):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad)
    assert resolve_budget("auto", "cpu") is None  # no device memory to protect on CPU
    assert resolve_budget("2GB", "cpu") == 2 * 1000**3


def test_default_blocks_are_the_outermost_module_lists() -> None:
    from torch import nn

    from nodes.diffusion.memory.manager import default_blocks

    class Inner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.parts = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(2, 2)
            self.encoder = nn.Module()
            self.encoder.layers = nn.ModuleList([Inner(), Inner(), Inner()])
            self.head = nn.ModuleList([nn.Linear(2, 2)])

    m = Model()
    assert default_blocks(m) == [*m.encoder.layers, m.head[0]]


def test_our_unet_streams_bitwise_equal() -> None:
    from nodes.diffusion.models.unet import UNetModel
    from tests.diffusion.ldm_fixtures import make_unet

    cfg, sd = make_unet("sd1", seed=3)
    unet = UNetModel(cfg)
    unet.load_state_dict(sd)
    unet.eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x, t, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([3.0, 871.0]), torch.randn(2, 7, 24, generator=g)
    expected = unet(x, t, ctx)

    blocks = [*unet.input_blocks, unet.middle_block, *unet.output_blocks]
    sizes = [sum(p.numel() * 4 for p in b.parameters()) for b in blocks]
    size = _nbytes(unet)
    budget = max(size // 3, size - sum(sizes) + 2 * max(sizes))
    assert budget < 0.6 * size
    mm = MemoryManager(ComputeDevice.emulated_device(), budget)
    handle = mm.register("unet", unet, blocks=blocks)
    with mm.use(handle) as net:
        assert torch.equal(net(x, t, ctx), expected)
    assert handle.streamed and mm.peak <= budget


def test_a_real_cpu_device_never_copies_weights() -> None:
    model = build(random_state(depth=2, seed=40), 2)
    home = _home_ptrs(model)
    x = sample_input()
    expected = model(x)
    mm = MemoryManager(ComputeDevice.of("cpu"), resolve_budget("auto", "cpu"))
    handle = mm.register("net", model)
    with mm.use(handle) as net:
        assert torch.equal(net(x), expected)
    assert _home_ptrs(model) == home and handle.state == "device" and mm.resident == _nbytes(model)
