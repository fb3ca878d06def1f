"""Brute-force reference for switched linear projections, written from the paper's formula.

A network is a list of layer specs. `dense_model` writes every layer as an explicit
dense matrix over the flattened (H, W, C) activations -- convolutions as banded
matrices built by loops, average pooling as a matrix of 1/k^2 entries, max pooling
as a 0/1 selection matrix chosen by NumPy's argmax -- and computes, with no
autodiff and in float64 NumPy, the switched weights ``W_1^(x) W_2^(x) ... w_i``,
the switched biases, the activities and Insens (eq. 8).

`jax_function` builds the same network as an ordinary plain-jnp function for the
library under test.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Specs: ("conv", out_channels, kernel, stride, "SAME"|"VALID"), ("relu",),
# ("maxpool", window, stride), ("avgpool", window, stride), ("flatten",), ("dense", n)


def init_params(spec, in_shape, rng: np.random.Generator):
    """Random weights for every conv/dense layer of ``spec``; returns (params, shapes)."""
    params, shape = [], tuple(in_shape)
    for layer in spec:
        kind = layer[0]
        if kind == "conv":
            _, cout, k, s, pad = layer
            h, w, c = shape
            kern = rng.normal(0, 1 / np.sqrt(k * k * c), (k, k, c, cout))
            bias = rng.normal(0, 0.3, (cout,))
            params.append((kern, bias))
            if pad == "SAME":
                shape = (-(-h // s), -(-w // s), cout)
            else:
                shape = ((h - k) // s + 1, (w - k) // s + 1, cout)
        elif kind == "dense":
            n = int(np.prod(shape))
            params.append(
                (rng.normal(0, 1 / np.sqrt(n), (n, layer[1])), rng.normal(0, 0.3, (layer[1],)))
            )
            shape = (layer[1],)
        elif kind in ("maxpool", "avgpool"):
            _, win, s = layer
            h, w, c = shape
            shape = ((h - win) // s + 1, (w - win) // s + 1, c)
            params.append(None)
        elif kind == "flatten":
            shape = (int(np.prod(shape)),)
            params.append(None)
        else:
            params.append(None)
    return params


def _same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def jax_function(spec, params, *, relu="nn"):
    """The network as a plain-jnp per-example function ``f(x_HWC) -> logits``.

    ``relu``: ``"nn"`` (`jax.nn.relu`), ``"maximum"`` or a function ``z -> relu(z)``.
    """

    def f(x):
        h = x
        for layer, p in zip(spec, params, strict=True):
            kind = layer[0]
            if kind == "conv":
                _, cout, k, s, pad = layer
                out = lax.conv_general_dilated(
                    h[None],
                    jnp.asarray(p[0]),
                    (s, s),
                    pad,
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                )[0]
                h = out + jnp.asarray(p[1])[None, None, :]
            elif kind == "dense":
                h = h @ jnp.asarray(p[0]) + jnp.asarray(p[1])
            elif kind == "relu":
                if callable(relu):
                    h = relu(h)
                else:
                    h = jax.nn.relu(h) if relu == "nn" else jnp.maximum(h, 0.0)
            elif kind == "maxpool":
                _, win, s = layer
                h = lax.reduce_window(h, -jnp.inf, lax.max, (win, win, 1), (s, s, 1), "VALID")
            elif kind == "avgpool":
                _, win, s = layer
                h = lax.reduce_window(h, 0.0, lax.add, (win, win, 1), (s, s, 1), "VALID") / (
                    win * win
                )
            elif kind == "flatten":
                h = h.reshape(-1)
        return h

    return f


def _conv_matrix(shape, kern, s, pad):
    h, w, c = shape
    k, _, _, cout = kern.shape
    if pad == "SAME":
        (pt, _), (pl, _) = _same_pads(h, k, s), _same_pads(w, k, s)
        oh, ow = -(-h // s), -(-w // s)
    else:
        pt = pl = 0
        oh, ow = (h - k) // s + 1, (w - k) // s + 1
    a = np.zeros((oh * ow * cout, h * w * c))
    for i in range(oh):
        for j in range(ow):
            for di in range(k):
                for dj in range(k):
                    ii, jj = i * s + di - pt, j * s + dj - pl
                    if 0 <= ii < h and 0 <= jj < w:
                        for o in range(cout):
                            row = (i * ow + j) * cout + o
                            cols = (ii * w + jj) * c + np.arange(c)
                            a[row, cols] += kern[di, dj, :, o]
    return a, (oh, ow, cout)


def _pool_windows(shape, win, s):
    h, w, c = shape
    oh, ow = (h - win) // s + 1, (w - win) // s + 1
    for i in range(oh):
        for j in range(ow):
            for ch in range(c):
                members = [
                    ((i * s + di) * w + (j * s + dj)) * c + ch
                    for di in range(win)
                    for dj in range(win)
                ]
                yield (i * ow + j) * c + ch, members
    return


@dataclass
class Reference:
    """Per ReLU layer (then the output): switched weights (n, d), biases (n,), activities (n,)."""

    weights: list
    biases: list
    activities: list
    relu_pool_losers: list  # per ReLU layer: bool (n,) pooled-away neurons (all False if unpooled)

    def insens(self, *, include_pool_losers: bool = False) -> np.ndarray:
        total, count = 0.0, 0
        for k in range(len(self.weights) - 1):
            w, v = self.weights[k], self.activities[k]
            inactive = v <= 0
            if include_pool_losers:
                inactive = inactive | self.relu_pool_losers[k]
            sq = np.sum(w * w, axis=1)
            for i in np.flatnonzero(inactive):
                count += 1
                if sq[i] > 0:
                    total = total + v[i] * w[i] / sq[i]
        if count == 0:
            return np.zeros(self.weights[0].shape[1])
        return np.asarray(total) / count if np.ndim(total) else np.zeros(self.weights[0].shape[1])


def dense_model(spec, params, x) -> Reference:
    """Switched projections of every ReLU layer and the output, by explicit matrices."""
    x = np.asarray(x, np.float64)
    d = x.size
    shape = x.shape
    h = x.reshape(-1)
    sw = np.eye(d)  # switched map so far: h = sw @ x + sb
    sb = np.zeros(d)
    weights, biases, acts, losers = [], [], [], []
    for li, (layer, p) in enumerate(zip(spec, params, strict=True)):
        kind = layer[0]
        if kind == "conv":
            a, shape = _conv_matrix(shape, p[0], layer[3], layer[4])
            bias = np.tile(p[1], a.shape[0] // p[1].size)
            h, sw, sb = a @ h + bias, a @ sw, a @ sb + bias
        elif kind == "dense":
            a = p[0].T
            h, sw, sb = a @ h + p[1], a @ sw, a @ sb + p[1]
            shape = (a.shape[0],)
        elif kind == "relu":
            weights.append(sw.copy())
            biases.append(sb.copy())
            acts.append(h.copy())
            losers.append(np.zeros(h.size, bool))
            mask = (h > 0).astype(np.float64)
            h, sw, sb = h * mask, sw * mask[:, None], sb * mask
        elif kind in ("maxpool", "avgpool"):
            _, win, s = layer
            rows = list(_pool_windows(shape, win, s))
            sel = np.zeros((len(rows), h.size))
            won = np.zeros(h.size, bool)
            for r, members in rows:
                if kind == "maxpool":
                    best = members[int(np.argmax(h[members]))]  # first index wins ties
                    sel[r, best] = 1.0
                    won[best] = True
                else:
                    sel[r, members] = 1.0 / (win * win)
            if kind == "maxpool" and li > 0 and spec[li - 1][0] == "relu":
                losers[-1] = ~won
            h, sw, sb = sel @ h, sel @ sw, sel @ sb
            hh, ww, c = shape
            shape = ((hh - win) // s + 1, (ww - win) // s + 1, c)
        elif kind == "flatten":
            shape = (h.size,)
    weights.append(sw)
    biases.append(sb)
    acts.append(h)
    return Reference(weights, biases, acts, losers)


def random_spec(rng: np.random.Generator, in_shape=(8, 8, 2)):
    """A random small conv/pool/dense ReLU architecture valid for ``in_shape``, with at
    least one ReLU layer."""
    spec, (h, w, _) = [], in_shape
    for _ in range(rng.integers(0, 3)):
        k = int(rng.choice([1, 2, 3]))
        s = int(rng.choice([1, 1, 2]))
        pad = str(rng.choice(["SAME", "VALID"]))
        if pad == "VALID" and (h < k or w < k):
            pad = "SAME"
        cout = int(rng.integers(1, 4))
        spec += [("conv", cout, k, s, pad), ("relu",)]
        if pad == "SAME":
            h, w = -(-h // s), -(-w // s)
        else:
            h, w = (h - k) // s + 1, (w - k) // s + 1
        if h >= 2 and w >= 2 and rng.random() < 0.6:
            kind = "maxpool" if rng.random() < 0.7 else "avgpool"
            win = 2
            s2 = int(rng.choice([1, 2]))
            spec.append((kind, win, s2))
            h, w = (h - win) // s2 + 1, (w - win) // s2 + 1
    spec.append(("flatten",))
    for _ in range(rng.integers(0, 3)):
        spec += [("dense", int(rng.integers(2, 9))), ("relu",)]
    if ("relu",) not in spec:  # Insens refuses a network without ReLU layers (nothing to
        spec += [("dense", 5), ("relu",)]  # average); no draw here: the other specs stay
    spec.append(("dense", int(rng.integers(2, 5))))
    return spec


CONV_POOL_DENSE = (
    ("conv", 4, 3, 1, "SAME"),
    ("relu",),
    ("maxpool", 2, 2),
    ("flatten",),
    ("dense", 6),
    ("relu",),
    ("dense", 3),
)
"""A small ReLU network: conv, ReLU, 2x2 max-pool, flatten, dense, ReLU, dense."""


def conv_pool_dense(seed: int, in_shape=(8, 8, 2)):
    """`CONV_POOL_DENSE` with random weights and one random input.

    Returns:
      ``(spec, params, f, x)``: ``f`` the JAX function of `jax_function`, ``x`` of
      ``in_shape`` (float64 numpy).
    """
    rng = np.random.default_rng(seed)
    spec = list(CONV_POOL_DENSE)
    params = init_params(spec, in_shape, rng)
    return spec, params, jax_function(spec, params), rng.normal(size=in_shape)
