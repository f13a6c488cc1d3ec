"""A seed x cfg sweep on a tiny real checkpoint: the loader and the text encoders run once for the
whole batch, every image is distinct, named by its parameters, and carries its own workflow."""

from __future__ import annotations

import json

from PIL import Image

from nodegraph import Executor
from nodegraph.batch import run_batch
from tests.headless.diffusion_helpers import diffusion_registry, save_graph, settings, write_models


def test_seed_cfg_sweep_shares_the_checkpoint_and_prompt_encoding(tmp_path):
    models, out = tmp_path / "models", tmp_path / "out"
    (name,) = write_models(models)
    executor = Executor(diffusion_registry(), device="cpu", output_dir=out, settings=settings(models))
    result = run_batch(save_graph(name), ["sampler.seed=1..3", "sampler.cfg=4,6"], executor=executor,
                       output_dir=out, progress=False)
    assert result.ok, result.failed
    items = result.manifest["items"]
    assert [e["name"] for e in items] == [f"seed={s}_cfg={c}" for s in (1, 2, 3) for c in ("4.0", "6.0")]
    executed = [nid for o in result.outcomes.values() for nid in o.executed]
    assert executed.count("ckpt") == 1  # one executor: the checkpoint is loaded once per batch
    assert executed.count("positive") == 1 and executed.count("negative") == 1
    assert executed.count("sampler") == 6 and executed.count("save") == 6
    digests = set()
    for e in items:
        (rel,) = e["outputs"]
        assert rel == f"img_{e['name']}_00001.png"
        with Image.open(out / rel) as im:
            assert im.size == (48, 32)
            digests.add(im.tobytes())
            embedded = json.loads(im.text["workflow"])
        # The PNG embeds the workflow with this item's exact values: it reproduces the image.
        assert embedded["nodes"]["sampler"]["values"]["seed"] == e["overrides"]["sampler.seed"]
        assert embedded["nodes"]["sampler"]["values"]["cfg"] == e["overrides"]["sampler.cfg"]
    assert len(digests) == 6  # different seeds / cfg give different images
    # The bulk of an item's time is node work; the rest (planning, hashing, manifest) is small.
    for e in items[1:]:
        assert e["node_seconds"] <= e["seconds"]
