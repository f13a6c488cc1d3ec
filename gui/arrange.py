"""Arrange: lay nodes out left to right by dependency.

A layered (Sugiyama-style) layout, the kind artists expect from "tidy up":

1. layers: each node's column is the longest path to it from a source, taken along
   networkx's topological order (a cycle, which a valid workflow never has, is
   collapsed to one column through its condensation rather than refused);
2. crossing reduction: a few down/up sweeps ordering each column by the mean row of
   its neighbours in the previous one (the barycentre heuristic);
3. groups kept together: members of a group sort next to each other in every column
   (by the group's mean barycentre); each group then gets a horizontal band of its
   own across the columns and its frame is refitted around its members, so no other
   node ends up under it;
4. coordinates: columns as wide as their widest node, nodes stacked with a gap, the
   whole block anchored at the top-left of where the nodes were.

Pure functions over plain data (ids, links, sizes): no Qt, so the layout can be
tested on its own and reused by any front-end.  networkx does the graph algorithms
(the engine keeps its own dependency-free planner).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import networkx as nx

Size = tuple[float, float]
Point = tuple[float, float]
Rect = tuple[float, float, float, float]  # x, y, w, h

COLUMN_GAP = 80.0
ROW_GAP = 30.0
GROUP_GAP = 40.0  # extra space between members of different groups in a column (room for a title)
GROUP_PAD = 20.0
GROUP_TITLE = 30.0
SWEEPS = 6


@dataclass(frozen=True)
class Arrangement:
    """New top-left positions for nodes and new bounds for the groups that moved."""

    positions: dict[str, Point]
    groups: dict[str, Rect]


def layers(ids: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Column of each node: the longest path from a source (cycles share a column)."""
    g = nx.DiGraph()
    g.add_nodes_from(ids)
    g.add_edges_from((a, b) for a, b in edges if a in g and b in g and a != b)
    cond = nx.condensation(g)  # a DAG of strongly connected components
    depth: dict[int, int] = {}
    for c in nx.topological_sort(cond):
        depth[c] = max((depth[p] + 1 for p in cond.predecessors(c)), default=0)
    members = cond.graph["mapping"]  # node -> component
    return {n: depth[members[n]] for n in g.nodes}


def count_crossings(order: Mapping[str, int], column: Mapping[str, int],
                    edges: Iterable[tuple[str, str]]) -> int:
    """Crossings between edges joining the same pair of adjacent columns (a measure of
    how readable the layout is; also what the tests check)."""
    by_pair: dict[int, list[tuple[int, int]]] = {}
    for a, b in edges:
        if a in column and b in column and column[b] == column[a] + 1:
            by_pair.setdefault(column[a], []).append((order[a], order[b]))
    return sum(_inversions(segs) for segs in by_pair.values())


def _inversions(segs: list[tuple[int, int]]) -> int:
    """Pairs of segments that cross: sorted by their left end, the pairs whose right ends
    are in strictly the opposite order (a Fenwick tree: O(E log E), not O(E²), so Arrange stays
    quick on wide graphs).  Segments sharing an end never cross."""
    segs = sorted(segs)
    size = max((b for _, b in segs), default=0) + 2
    tree = [0] * (size + 1)
    seen = total = 0
    for _, b in segs:
        i, le = b + 1, 0
        while i > 0:  # earlier segments whose right end is at or above b (no crossing)
            le += tree[i]
            i -= i & -i
        total += seen - le  # the others end strictly below b: each crosses this one
        i = b + 1
        while i <= size:
            tree[i] += 1
            i += i & -i
        seen += 1
    return total


def _order_columns(column: Mapping[str, int], edges: list[tuple[str, str]], start_y: Mapping[str, float],
                   group_of: Mapping[str, str | None]) -> list[list[str]]:
    """Each column's nodes top to bottom, after barycentre sweeps (group members adjacent)."""
    n_cols = max(column.values(), default=-1) + 1
    cols: list[list[str]] = [[] for _ in range(n_cols)]
    for nid in sorted(column, key=lambda n: (start_y.get(n, 0.0), n)):  # start from the current picture
        cols[column[nid]].append(nid)
    preds: dict[str, list[str]] = {n: [] for n in column}
    succs: dict[str, list[str]] = {n: [] for n in column}
    for a, b in edges:
        if a in column and b in column and column[a] < column[b]:
            preds[b].append(a)
            succs[a].append(b)
    rank = {n: float(i) for col in cols for i, n in enumerate(col)}

    def reorder(col: list[str], neigh: Mapping[str, list[str]]) -> list[str]:
        bary = {n: (sum(rank[m] for m in neigh[n]) / len(neigh[n])) if neigh[n] else rank[n] for n in col}
        gbary: dict[str | None, list[float]] = {}
        for n in col:
            gbary.setdefault(group_of.get(n), []).append(bary[n])
        gmean = {g: sum(v) / len(v) for g, v in gbary.items()}
        key = {n: (gmean[group_of.get(n)] if group_of.get(n) else bary[n], str(group_of.get(n) or ""), bary[n])
               for n in col}
        return sorted(col, key=lambda n: key[n])

    best = [list(c) for c in cols]
    best_x = count_crossings(rank_of(best), column, edges)
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        idx = range(1, n_cols) if down else range(n_cols - 2, -1, -1)
        for c in idx:
            cols[c] = reorder(cols[c], preds if down else succs)
            rank.update({n: float(i) for i, n in enumerate(cols[c])})
        x = count_crossings(rank_of(cols), column, edges)
        if x < best_x:
            best, best_x = [list(c) for c in cols], x
    return best


def rank_of(cols: list[list[str]]) -> dict[str, int]:
    return {n: i for col in cols for i, n in enumerate(col)}


def arrange(ids: Iterable[str], edges: Iterable[tuple[str, str]], sizes: Mapping[str, Size],
            positions: Mapping[str, Point], groups: Mapping[str, Rect] | None = None) -> Arrangement:
    """Positions for ``ids`` laid out left to right by ``edges`` (src, dst).

    ``positions`` are the current top-left corners (the block stays where it was, and
    ties keep their current top-to-bottom order); ``groups`` maps a group id to its
    bounds: a node belongs to the group holding its centre, and groups whose members
    all move get bounds refitted around them."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        return Arrangement({}, {})
    edge_list = [(a, b) for a, b in edges if a in sizes and b in sizes]
    column = layers(ids, edge_list)
    group_of = _membership(ids, sizes, positions, groups or {})
    cols = _order_columns(column, edge_list, {n: positions[n][1] for n in ids}, group_of)
    ox = min(positions[n][0] for n in ids)
    oy = min(positions[n][1] for n in ids)
    xs, x = [], ox
    for col in cols:
        xs.append(x)
        x += max((sizes[n][0] for n in col), default=0.0) + COLUMN_GAP
    out: dict[str, Point] = {}
    y = oy
    for band in _bands(cols, group_of):
        top = y + (GROUP_TITLE + GROUP_PAD if band is not None else 0.0)
        bottom = top
        for c, col in enumerate(cols):
            cy = top
            for nid in col:
                if group_of.get(nid) == band:
                    out[nid] = (round(xs[c]), round(cy))
                    cy += sizes[nid][1] + ROW_GAP
            bottom = max(bottom, cy)
        y = bottom + (GROUP_PAD + GROUP_GAP if band is not None else GROUP_GAP - ROW_GAP)
    return Arrangement(out, _refit_groups(out, sizes, group_of, groups or {}))


def _bands(cols: list[list[str]], group_of: Mapping[str, str | None]) -> list[str | None]:
    """Groups (and the loose nodes, ``None``) top to bottom.  Each one is a horizontal band
    across all columns, so a group's refitted frame covers its members and nobody else;
    bands are ordered by their members' mean relative row (where the sweeps put them)."""
    where: dict[str | None, list[float]] = {}
    for col in cols:
        for i, nid in enumerate(col):
            where.setdefault(group_of.get(nid), []).append((i + 0.5) / len(col))
    return sorted(where, key=lambda b: (sum(where[b]) / len(where[b]), str(b)))


def _membership(ids: list[str], sizes: Mapping[str, Size], positions: Mapping[str, Point],
                groups: Mapping[str, Rect]) -> dict[str, str | None]:
    """Group of each node: the smallest group containing its centre (None outside any)."""
    out: dict[str, str | None] = {}
    for nid in ids:
        cx = positions[nid][0] + sizes[nid][0] / 2
        cy = positions[nid][1] + sizes[nid][1] / 2
        inside = [(w * h, gid) for gid, (x, y, w, h) in groups.items() if x <= cx <= x + w and y <= cy <= y + h]
        out[nid] = min(inside)[1] if inside else None
    return out


def _refit_groups(pos: Mapping[str, Point], sizes: Mapping[str, Size], group_of: Mapping[str, str | None],
                  groups: Mapping[str, Rect]) -> dict[str, Rect]:
    members: dict[str, list[str]] = {}
    for nid, g in group_of.items():
        if g is not None:
            members.setdefault(g, []).append(nid)
    out: dict[str, Rect] = {}
    for gid, nids in members.items():
        x0 = min(pos[n][0] for n in nids) - GROUP_PAD
        y0 = min(pos[n][1] for n in nids) - GROUP_PAD - GROUP_TITLE
        x1 = max(pos[n][0] + sizes[n][0] for n in nids) + GROUP_PAD
        y1 = max(pos[n][1] + sizes[n][1] for n in nids) + GROUP_PAD
        if gid in groups:
            out[gid] = (x0, y0, x1 - x0, y1 - y0)
    return out
