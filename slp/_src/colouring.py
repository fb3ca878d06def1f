"""The probe route's colouring helpers (`slp._src.planner`'s probe layout): colour classes
split to fit a chunk, the cut operand's rows grouped by receptive box, and the slot table
that finds, per chunk, group and colour, the input element a probe stands for."""

from __future__ import annotations

import numpy as np

__all__ = ["split_colours", "row_groups", "slot_table"]


def split_colours(lat, n_lat: int, chunk: int):
    """The probe route's colour classes larger than a chunk split (probes are cheap before
    a dense cut), and each input element's slot inside its chunk: ``(colour, n_colours,
    colours_per_chunk, n_chunks, slot, n_slots)``."""
    d = len(lat)
    order = np.argsort(lat, kind="stable")
    first = np.searchsorted(lat[order], np.arange(n_lat))
    rank = np.empty(d, np.int64)
    rank[order] = np.arange(d) - first[lat[order]]
    ppc = int(np.bincount(lat, minlength=n_lat).max())
    n_split = -(-ppc // chunk)
    piece = -(-ppc // n_split)
    colour = lat * n_split + rank // piece
    n_colours = n_lat * n_split
    kc = max(1, min(chunk // piece, n_colours))
    n_chunks = -(-n_colours // kc)
    order = np.argsort(colour, kind="stable")
    step = colour[order] // kc
    starts = np.searchsorted(step, np.arange(n_chunks))
    slot = np.empty(d, np.int64)
    slot[order] = np.arange(d) - starts[step]
    n_slots = int(np.bincount(step, minlength=n_chunks).max())
    return colour, n_colours, kc, n_chunks, slot, n_slots


def row_groups(operand, nx: int):
    """Row groups of the cut's operand, rows with the same receptive box: ``(boxes,
    group_rows)``, the distinct boxes ``(G, 2 nx)`` (low corners then high) and each
    group's rows ``(G, R)``, padded with the row count."""
    lo = operand.lo.reshape(-1, nx)
    hi = operand.hi.reshape(-1, nx)
    rows_all = np.nonzero(np.all(hi >= lo, axis=1))[0]
    boxes = np.concatenate([lo[rows_all], hi[rows_all]], axis=1)
    uniq, inv = np.unique(boxes, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n_groups = len(uniq)
    r_max = int(np.bincount(inv, minlength=n_groups).max())
    group_rows = np.full((n_groups, r_max), lo.shape[0], np.int64)
    o = np.argsort(inv, kind="stable")
    g_sorted = inv[o]
    pos_in_group = np.arange(len(o)) - np.searchsorted(g_sorted, g_sorted)
    group_rows[g_sorted, pos_in_group] = rows_all[o]
    return uniq, group_rows


def slot_table(uniq, lattice, shape, colour, slot, sizes):
    """For each chunk, group and colour of the chunk: the slot of the (unique) input element
    of that colour inside the group's box, ``n_slots`` where there is none: ``(n_chunks, G,
    colours_per_chunk)``."""
    n_chunks, kc, n_slots = sizes
    nx, n_groups = len(shape), len(uniq)
    glo, ghi = uniq[:, :nx].astype(np.int64), uniq[:, nx:].astype(np.int64)
    valid = np.ones((n_groups,) + lattice, bool)
    flat = np.zeros((n_groups,) + lattice, np.int64)
    strides = np.cumprod((shape[1:] + (1,))[::-1])[::-1]
    for a in range(nx):
        tau = np.arange(lattice[a])
        j = glo[:, a : a + 1] + (tau[None] - glo[:, a : a + 1]) % lattice[a]  # (G, k_a)
        bshape = [n_groups] + [1] * nx
        bshape[1 + a] = lattice[a]
        valid = valid & (j <= ghi[:, a : a + 1]).reshape(bshape)
        flat = flat + (j * strides[a]).reshape(bshape)
    valid = valid.reshape(n_groups, -1)
    flat = np.where(valid, flat.reshape(n_groups, -1), 0)
    table = np.full((n_groups, n_chunks * kc), n_slots, np.int64)
    gi, ti = np.nonzero(valid)
    pix = flat[gi, ti]
    table[gi, colour[pix]] = slot[pix]
    return table.reshape(n_groups, n_chunks, kc).transpose(1, 0, 2)
