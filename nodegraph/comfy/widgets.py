"""Aligning a UI-format node's positional ``widgets_values`` with its widgets.

The list holds one value per widget in declaration order, plus a frontend-only
``control_after_generate`` value after every seed widget -- saved as a string
("fixed", "randomize", …) by current frontends but as a boolean (``true`` =
randomize) by older ones, and left out entirely by some exporters.  Matching
values by their *type* ("is the next value a control word?") shifts every later
value by one when the control is a boolean (ComfyUI's own default txt2img
workflow: ``steps=True, cfg=8, …``).  So the layout is decided from the widget
specs first -- how many values a node has with and without controls -- and value
types are consulted only when the count fits neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .mapping import SEED_CONTROLS, NodeMap

#: Old frontends stored control_after_generate as a toggle: true = randomize.
_BOOL_CONTROLS = {True: "randomize", False: "fixed"}


def control_word(value: Any) -> str | None:
    """The control value as one of :data:`SEED_CONTROLS` (``None`` if unreadable)."""
    if isinstance(value, bool):
        return _BOOL_CONTROLS[value]
    return value if isinstance(value, str) and value in SEED_CONTROLS else None


def align_widget_values(nmap: NodeMap, wv: Sequence[Any]) -> tuple[dict[str, Any], dict[str, str], int]:
    """(values by ComfyUI input name, seed controls by input name, number of values left over)."""
    widgets = nmap.widgets
    seeds = sum(1 for p in widgets if p.seed)
    # Enough values for a control after every seed: they are there, whatever their type.
    # Fewer: some exporter left them out (or trailing values are missing); then a value
    # after a seed is a control only if it looks like one (a control word or a boolean).
    every_seed_has_control = seeds > 0 and len(wv) >= len(widgets) + seeds
    values: dict[str, Any] = {}
    controls: dict[str, str] = {}
    i = 0
    for p in widgets:
        if i >= len(wv):
            break
        values[p.comfy] = wv[i]
        i += 1
        if not p.seed or i >= len(wv):
            continue
        if every_seed_has_control or (isinstance(wv[i], str) and wv[i] in SEED_CONTROLS) or isinstance(wv[i], bool):
            word = control_word(wv[i])
            if word is not None:
                controls[p.comfy] = word
            i += 1
    return values, controls, len(wv) - i - len(nmap.ui_widgets)
