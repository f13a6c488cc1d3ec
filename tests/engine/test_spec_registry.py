"""Node specs are checked at registration; packs load through one API and an entry-point group;
port types follow one explicit compatibility rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from engine_nodes import TEST_NODES, make_registry

from nodegraph import ANY, Bool, Combo, Float, In, Input, Int, NodeSpec, Out, Registry, Seed, String, Widget, node
from nodegraph.errors import SpecError
from nodegraph.registry import ENTRY_POINT_GROUP
from nodegraph.spec import SEED_MAX, check_spec
from nodegraph.types import BUILTIN_TYPES, TypeTable, compatible
from nodes import primitives

ROOT = Path(__file__).resolve().parents[2]


def _fn(ctx, x):  # noqa: ANN001, ANN202 - a deliberately plain node function
    return x


# -- spec checks: each bad declaration fails loudly, naming the node -------------------------------------


@pytest.mark.parametrize(
    ("inputs", "outputs", "needle"),
    [
        ([Input("x", "INT", Widget.INT, "ten")], [Out("y", "INT")], "default 'ten' is not a int"),
        ([Input("x", "INT", Widget.INT, 1.5)], [Out("y", "INT")], "default 1.5 is not a int"),
        ([Input("x", "INT", Widget.INT, True)], [Out("y", "INT")], "default True is not a int"),
        ([Input("x", "FLOAT", Widget.FLOAT, float("nan"))], [Out("y", "INT")], "finite"),
        ([Input("x", "STRING", Widget.STRING, 3)], [Out("y", "INT")], "default must be a string"),
        ([Input("x", "BOOLEAN", Widget.BOOL, "yes")], [Out("y", "INT")], "default must be a bool"),
        ([Int("x", 0, min=5, max=1)], [Out("y", "INT")], "min 5 > max 1"),
        ([Float("x", 9.0, min=0.0, max=1.0)], [Out("y", "INT")], "default 9.0 outside [0.0, 1.0]"),
        ([Int("x", -1, min=0)], [Out("y", "INT")], "default -1 outside [0, None]"),
        ([Input("x", "INT", Widget.INT, 0, step=0)], [Out("y", "INT")], "step must be > 0"),
        ([Combo("x", ["a", "b"], "c")], [Out("y", "INT")], "default 'c' is not one of ['a', 'b']"),
        ([Input("x", "STRING", Widget.COMBO, "a")], [Out("y", "INT")], "a COMBO needs choices"),
        ([Combo("x", [])], [Out("y", "INT")], "at least one choice"),
        ([Input("x", "FLOAT", Widget.INT, 0)], [Out("y", "INT")], "widget INT carries INT, not FLOAT"),
        ([Input("x", "INT", None, 3)], [Out("y", "INT")], "has a default but no widget"),
        ([In("x", "INT"), In("x", "INT")], [Out("y", "INT")], "input 'x' declared twice"),
        ([In("x", "INT")], [Out("y", "INT"), Out("y", "INT")], "output 'y' declared twice"),
        ([In("x-1", "INT")], [Out("y", "INT")], "is not an identifier"),
        ([In("x", "INT")], [], "no outputs must be declared output_node=True"),
    ],
)
def test_bad_spec_fails_at_decoration_naming_the_node(inputs, outputs, needle):
    with pytest.raises(SpecError) as exc:
        node("pack.bad_node", inputs=inputs, outputs=outputs)(_fn)
    assert "'pack.bad_node'" in str(exc.value)
    assert needle in str(exc.value)


def test_constructor_helpers_do_not_silently_coerce_bad_defaults():
    """``Int("steps", 2.7)`` must not quietly become 2: the spec check rejects it, naming the node."""
    for bad in (Int("x", 2.7), Int("x", "3"), Seed("x", 1.5), Bool("x", "yes"), Float("x", "0.5")):
        with pytest.raises(SpecError, match="'pack.bad'"):
            node("pack.bad", inputs=[bad], outputs=[Out("y", "INT")])(lambda ctx, x: x)
    # ints are fine for FLOAT inputs and are normalised
    assert Float("x", 1).default == 1.0 and isinstance(Float("x", 1).default, float)


@pytest.mark.parametrize(
    ("fn", "needle"),
    [
        (lambda: 0, "first positional parameter"),
        (lambda *, ctx, x: x, "first positional parameter"),
        (lambda ctx, maybe=None: 0, "does not accept declared input(s) ['x']"),
        (lambda ctx, x, extra, maybe=None: x, "requires parameter 'extra' which is not a declared input"),
        (lambda ctx, x, maybe: x, "optional input 'maybe' needs a default value"),
    ],
)
def test_signature_must_match_declared_inputs(fn, needle):
    with pytest.raises(SpecError) as exc:
        node("pack.sig", inputs=[In("x", "INT"), In("maybe", "INT", optional=True)], outputs=[Out("y", "INT")])(fn)
    assert "'pack.sig'" in str(exc.value) and needle in str(exc.value)


def test_signature_accepting_kwargs_or_defaults_is_fine():
    spec = node("pack.kw", inputs=[In("x", "INT"), In("maybe", "INT", optional=True)],
                outputs=[Out("y", "INT")])(lambda ctx, **kw: kw["x"])
    assert spec.type_id == "pack.kw"
    spec = node("pack.extra_default", inputs=[In("x", "INT")], outputs=[Out("y", "INT")])(
        lambda ctx, x, unused=3: x)
    assert [i.name for i in spec.inputs] == ["x"]


@pytest.mark.parametrize("bad_id", ["", "has space", "1starts.with_digit", "trailing.", "a..b"])
def test_bad_type_ids_and_versions(bad_id):
    with pytest.raises(SpecError, match="type id"):
        node(bad_id, outputs=[Out("y", "INT")])(lambda ctx: 1)
    with pytest.raises(SpecError, match="version must be a positive int"):
        node("pack.v0", version=0, outputs=[Out("y", "INT")])(lambda ctx: 1)


def test_good_spec_carries_everything_the_catalogue_needs():
    @node("pack.sample", version=3, category="sampling", display_name="Sampler",
          inputs=[In("model", "MODEL"), Seed(), Int("steps", 20, min=1, max=1000),
                  Float("cfg", 7.5, min=0.0, max=30.0, step=0.5), Combo("sampler", ["euler", "heun"], "euler"),
                  String("prompt", "a cat", multiline=True), Bool("fast", False),
                  In("hint", "IMAGE,MASK", optional=True)],
          outputs=[Out("LATENT", "LATENT")], output_node=False)
    def sample(ctx, model, seed, steps, cfg, sampler, prompt, fast, hint=None):
        """Denoise a latent."""
        return model

    d = sample.to_dict()
    assert d["type"] == "pack.sample" and d["version"] == 3 and d["category"] == "sampling"
    assert d["display_name"] == "Sampler" and d["description"] == "Denoise a latent."
    by_name = {i["name"]: i for i in d["inputs"]}
    assert by_name["seed"] == {"name": "seed", "type": "INT", "optional": False, "widget": "SEED", "default": 0,
                               "min": 0, "max": SEED_MAX, "step": 1}
    assert by_name["cfg"]["step"] == 0.5 and by_name["cfg"]["widget"] == "FLOAT"
    assert by_name["sampler"]["choices"] == ["euler", "heun"]
    assert by_name["prompt"]["multiline"] is True
    assert by_name["hint"] == {"name": "hint", "type": "IMAGE,MASK", "optional": True}
    assert d["outputs"] == [{"name": "LATENT", "type": "LATENT"}]
    json.dumps(d)  # the catalogue is JSON-able
    # display name defaults from the id
    assert node("pack.my_node", outputs=[Out("y", "INT")])(lambda ctx: 1).display_name == "My Node"


def test_dynamic_choices_are_computed_on_demand_and_a_broken_provider_does_not_break_the_catalogue():
    listed = []

    def provider():
        listed.append(1)
        return ["a.safetensors", "b.safetensors"]

    spec = node("pack.dyn", inputs=[Combo("ckpt", provider)], outputs=[Out("y", "INT")])(lambda ctx, ckpt: 1)
    assert listed == []  # not at import time
    assert spec.inputs[0].choice_list() == ["a.safetensors", "b.safetensors"]

    def broken():
        raise OSError("models folder unreadable")

    spec = node("pack.dyn2", inputs=[Combo("ckpt", broken)], outputs=[Out("y", "INT")])(lambda ctx, ckpt: 1)
    d = spec.to_dict()["inputs"][0]
    assert d["choices"] == [] and "unreadable" in d["choices_error"]


# -- registry ----------------------------------------------------------------------------------------------


def test_unknown_port_type_is_rejected_at_registration_naming_node_and_type():
    spec = node("pack.weird", inputs=[In("x", "TENSOR_THING")], outputs=[Out("y", "INT")])(lambda ctx, x: x)
    reg = Registry()
    with pytest.raises(SpecError, match=r"'pack\.weird'.*unknown port type 'TENSOR_THING'"):
        reg.add(spec)
    spec = node("pack.weird_out", outputs=[Out("y", "IMAGE,NOPE")])(lambda ctx: 1)
    with pytest.raises(SpecError, match=r"'pack\.weird_out'.*output 'y' has unknown port type 'IMAGE,NOPE'"):
        reg.add(spec)
    spec = node("pack.empty_type", inputs=[In("x", "")], outputs=[Out("y", "INT")])(lambda ctx, x: x)
    with pytest.raises(SpecError, match=r"'pack\.empty_type'.*unknown port type ''"):
        reg.add(spec)
    # a pack may register its own type first
    reg.types.register_type("TENSOR_THING", "#010203", "a pack type")
    reg.add(node("pack.weird", inputs=[In("x", "TENSOR_THING")], outputs=[Out("y", "INT")])(lambda ctx, x: x))
    assert "pack.weird" in reg and reg.types.color("TENSOR_THING") == "#010203"
    with pytest.raises(ValueError, match="already registered with a different definition"):
        reg.types.register_type("TENSOR_THING", "#ffffff")
    reg.types.register_type("TENSOR_THING", "#010203", "a pack type")  # identical: no-op


def test_duplicate_type_ids_across_packs_fail_naming_both_packs():
    reg = Registry()
    a = node("shared.node", outputs=[Out("y", "INT")])(lambda ctx: 1)
    b = node("shared.node", outputs=[Out("y", "INT")])(lambda ctx: 2)
    reg.add_pack("pack_a", [a])
    with pytest.raises(SpecError) as exc:
        reg.add_pack("pack_b", [b])
    msg = str(exc.value)
    assert "'shared.node'" in msg and "'pack_a'" in msg and "'pack_b'" in msg
    assert reg["shared.node"].fn(None) == 1  # the first registration is kept
    reg.add_pack("pack_a", [a])  # registering the very same spec again is harmless
    assert len(reg) == 1


def test_registry_rejects_non_specs_and_records_pack_name():
    reg = Registry()
    with pytest.raises(SpecError, match="expected a NodeSpec"):
        reg.add_pack("oops", [lambda ctx: 1])  # type: ignore[list-item]
    with pytest.raises(SpecError, match="'t.big'.*unknown port type 'ARRAY'"):
        reg.add_pack("test", TEST_NODES)  # t.big needs the pack's own ARRAY type registered first
    assert len(reg) == 0  # all or nothing: no half-registered pack
    reg.types.register_type("ARRAY", "#123456")
    reg.add_pack("test", TEST_NODES)
    assert reg["t.add"].pack == "test"
    assert [s.type_id for s in reg] == sorted(s.type_id for s in reg)  # all in category "test"
    assert set(reg.categories()) == {"test"}
    assert isinstance(reg.get("t.add"), NodeSpec) and reg.get("nope") is None


def test_primitive_pack_is_installed_as_an_entry_point_and_loads():
    eps = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert eps.get("primitives") == "nodes.primitives:register"
    reg = Registry.with_installed_packs(strict=True)
    assert "primitives" not in reg.pack_errors
    for spec in primitives.NODES:
        assert reg[spec.type_id].pack == "primitives"
    catalogue = reg.catalogue()
    assert any(d["type"] == "primitives.save_text" and d["output_node"] for d in catalogue)


def test_broken_third_party_pack_is_recorded_not_fatal(tmp_path):
    """Real discovery through importlib.metadata: a fake installed distribution whose entry points are
    (a) a module that does not exist and (b) a register() that raises SpecError."""
    site = tmp_path / "site"
    dist = site / "brokenpack-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenpack\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[nodegraph.nodes]\nmissing = no_such_module_xyz:register\nbadspec = brokenpack_mod:register\n"
        "good = brokenpack_mod:register_good\n")
    (site / "brokenpack_mod.py").write_text(textwrap.dedent("""
        from nodegraph import In, Out, node

        def register(registry):
            registry.add_pack("badspec", [node("broken.x", inputs=[In("a", "NOPE")],
                                                outputs=[Out("y", "INT")])(lambda ctx, a: a)])

        def register_good(registry):
            registry.add_pack("good", [node("good.one", outputs=[Out("y", "INT")])(lambda ctx: 1)])
    """))
    code = textwrap.dedent("""
        import json, sys
        from nodegraph import Registry
        reg = Registry.with_installed_packs()
        try:
            Registry.with_installed_packs(strict=True)
            strict = "no error"
        except Exception as exc:
            strict = type(exc).__name__
        print(json.dumps({"errors": reg.pack_errors, "has_prim": "primitives.int" in reg,
                          "has_good": "good.one" in reg, "strict": strict}))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert set(res["errors"]) == {"missing", "badspec"}
    assert "ModuleNotFoundError" in res["errors"]["missing"] and "no_such_module_xyz" in res["errors"]["missing"]
    assert "SpecError" in res["errors"]["badspec"] and "'broken.x'" in res["errors"]["badspec"]
    assert res["has_prim"] and res["has_good"]
    assert res["strict"] != "no error"
    assert "failed to load" in out.stderr  # logged, not silent


def test_load_pack_calls_register_function():
    reg = Registry()
    reg.load_pack(primitives.register)
    assert "primitives.int" in reg and "primitives.show" in reg


# -- types ---------------------------------------------------------------------------------------------------


def test_compatibility_rule():
    assert compatible("IMAGE", "IMAGE")
    assert not compatible("IMAGE", "MASK")
    assert not compatible("INT", "FLOAT")  # no implicit numeric conversion
    assert not compatible("FLOAT", "INT")
    assert compatible(ANY, "MODEL") and compatible("MODEL", ANY) and compatible(ANY, ANY)
    assert compatible("MASK", "IMAGE,MASK") and compatible("IMAGE", "IMAGE, MASK")
    assert not compatible("LATENT", "IMAGE,MASK")
    assert compatible("IMAGE,MASK", "MASK")  # an output union feeds inputs of either member
    assert not compatible("IMAGE,MASK", "LATENT")


def test_type_table_knows_builtin_types_and_their_colours():
    table = TypeTable()
    for name in ("IMAGE", "MASK", "LATENT", "CONDITIONING", "MODEL", "CLIP", "VAE", "CONTROL_NET",
                 "UPSCALE_MODEL", "INT", "FLOAT", "STRING", "BOOLEAN", ANY):
        assert name in table, name
        assert table.color(name).startswith("#") and len(table.color(name)) == 7
    assert "IMAGE,MASK" in table and "IMAGE,NOPE" not in table and "" not in table and 3 not in table
    assert len({t.color for t in BUILTIN_TYPES}) == len(BUILTIN_TYPES)  # distinguishable ports
    with pytest.raises(ValueError):
        table.register_type(" padded ", "#000000")


def test_check_spec_against_registry_types_directly():
    spec = make_registry()["t.big"]
    check_spec(spec, known_types=lambda t: t in make_registry().types)
    with pytest.raises(SpecError, match="unknown port type 'ARRAY'"):
        check_spec(spec, known_types=lambda t: t in TypeTable())
