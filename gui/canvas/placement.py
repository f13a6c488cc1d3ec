"""Where a new node goes: where the user asked, or the nearest free place below it,
so added, dropped and pasted-image nodes never land on top of existing ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF

if TYPE_CHECKING:
    from .scene import GraphScene

FREE_GAP = 20.0
NEW_NODE_SIZE = (240.0, 120.0)  # a typical small node, before the real one has laid itself out


def free_spot(scene: GraphScene, pos: QPointF, size: tuple[float, float] = NEW_NODE_SIZE) -> QPointF:
    """The nearest place at or below/right of ``pos`` where a node of ``size`` overlaps no
    other node: new nodes never land on top of existing ones."""
    rects = [it.sceneBoundingRect().adjusted(-FREE_GAP / 2, -FREE_GAP / 2, FREE_GAP / 2, FREE_GAP / 2)
             for it in scene.node_items.values()]
    cand = QRectF(pos.x(), pos.y(), size[0], size[1])
    for _ in range(200):
        hit = next((r for r in rects if r.intersects(cand)), None)
        if hit is None:
            return cand.topLeft()
        cand.moveTop(hit.bottom() + 1)  # slide down past whatever is in the way
    return cand.topLeft()
