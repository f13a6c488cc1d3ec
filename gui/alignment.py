"""Alignment tools: line selected nodes up on an edge or spread them evenly.
They compute new positions only; the caller pushes one MoveCommand."""

from __future__ import annotations

from PySide6.QtCore import QRectF

Moves = dict[str, tuple[tuple[float, float], tuple[float, float]]]


def align(rects: dict[str, QRectF], how: str) -> Moves:
    """``how``: left, right, top, bottom, hcenter, vcenter, distribute_h, distribute_v."""
    if len(rects) < 2:
        return {}
    moves: Moves = {}

    def move(nid: str, x: float, y: float) -> None:
        r = rects[nid]
        if abs(r.x() - x) > 0.01 or abs(r.y() - y) > 0.01:
            moves[nid] = ((r.x(), r.y()), (x, y))

    if how == "left":
        x0 = min(r.left() for r in rects.values())
        for nid, r in rects.items():
            move(nid, x0, r.y())
    elif how == "right":
        x1 = max(r.right() for r in rects.values())
        for nid, r in rects.items():
            move(nid, x1 - r.width(), r.y())
    elif how == "top":
        y0 = min(r.top() for r in rects.values())
        for nid, r in rects.items():
            move(nid, r.x(), y0)
    elif how == "bottom":
        y1 = max(r.bottom() for r in rects.values())
        for nid, r in rects.items():
            move(nid, r.x(), y1 - r.height())
    elif how == "hcenter":
        cx = sum(r.center().x() for r in rects.values()) / len(rects)
        for nid, r in rects.items():
            move(nid, cx - r.width() / 2, r.y())
    elif how == "vcenter":
        cy = sum(r.center().y() for r in rects.values()) / len(rects)
        for nid, r in rects.items():
            move(nid, r.x(), cy - r.height() / 2)
    elif how in ("distribute_h", "distribute_v"):
        horiz = how == "distribute_h"
        order = sorted(rects, key=lambda n: rects[n].x() if horiz else rects[n].y())
        first, last = rects[order[0]], rects[order[-1]]
        total = sum(rects[n].width() if horiz else rects[n].height() for n in order)
        span = (last.right() - first.left()) if horiz else (last.bottom() - first.top())
        gap = (span - total) / (len(order) - 1)
        cur = first.left() if horiz else first.top()
        for nid in order:
            r = rects[nid]
            move(nid, cur, r.y()) if horiz else move(nid, r.x(), cur)
            cur += (r.width() if horiz else r.height()) + gap
    else:
        raise ValueError(f"unknown alignment {how!r}")
    return moves
