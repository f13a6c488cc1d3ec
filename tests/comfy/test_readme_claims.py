"""README's ComfyUI paragraph, checked against the mappings the shipped packs register: the number of
classes it claims, and that nothing it lists as "not mapped yet" maps (mappings get added in pack
branches; the prose was left behind once already: FLUX's eight classes were still listed as missing)."""

from __future__ import annotations

import re
from pathlib import Path

from nodegraph import Registry
from nodegraph.comfy.mapping import ComfyTable

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _table() -> ComfyTable:
    return ComfyTable.of(Registry.with_installed_packs(strict=True))


def test_claimed_class_count_is_what_the_packs_map() -> None:
    m = re.search(r"(\d+) classes across the shipped packs", README)
    assert m is not None, "README lost its count of mapped ComfyUI classes"
    assert int(m.group(1)) == len(_table().by_comfy)


def test_nothing_listed_as_not_mapped_maps() -> None:
    start = README.index("**Core classes not mapped yet**")
    paragraph = README[start : README.index("\n- **", start + 1)]
    listed = set(re.findall(r"`([A-Za-z0-9]+)`", paragraph))
    assert {"CheckpointLoader", "FreeU"} <= listed  # the paragraph was found and parsed
    assert sorted(listed & set(_table().by_comfy)) == []
