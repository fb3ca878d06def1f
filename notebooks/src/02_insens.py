# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Switched centres and Insens
#
# Notebook 1 showed that at an input $x$ every neuron of a ReLU network is one affine map,
# $v_i = x \cdot \hat w_i + \hat b_i$. This notebook builds the paper's two tools on top of it:
#
# 1. **the switched centre** $\hat c_i$ of a neuron, the point nearest to $x$ where the
#    neuron's switched activity is zero, and the decomposition of $v_i$ into one contribution
#    per pixel (section 3.2, eqs. 5 and 6);
# 2. **Insens**, inactive state sensitivity (section 4, eqs. 7 and 8): the mean over all
#    *inactive* neurons of the vector from the centre to $x$, computed step by step and then
#    with one call of `slp.insens`;
#
# then splits Insens by layer, shows it on MNIST digits with the paper's noise (its Figure 4)
# and which layer carries the digit there, says how to read an Insens map, and how to use
# `slp` on a model of your own; the last part lists what Insens cannot do.
#
# Reference: Szymanski, McCane & Atkinson, arXiv:1909.11275.

# %%
# %matplotlib inline
import functools
import time

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tutorial
from IPython.display import display

import slp
from slp import noise, plotting, training

start, cpu_start = time.perf_counter(), time.process_time()

# %% [markdown]
# The same small 2CONV network as in notebook 1 (`slp.models.TwoConv` with 16 and 32
# channels and 128 hidden units; one seeded epoch on 12,000 MNIST images): its cached
# checkpoint, or trained here if notebook 1 has not run (`tutorial.mnist_2conv`).

# %%
model, params, test_x, test_y, accuracy = tutorial.mnist_2conv()
print(f"test accuracy on {len(test_y)} images: {accuracy:.3f}")

f = slp.models.as_single_example(model, params)  # one image (28, 28, 1) -> 10 logits
LAYERS = ("conv 1", "conv 2", "dense")  # the hidden ReLU layers; the output comes last

# %% [markdown]
# The small network has an accuracy of 0.959 on these 2,000 test images, below the full
# 2CONV of `experiments/mnist_noise.py` (0.9925) but enough for the maps below.
#
# ## Switched centres and the decomposition of an activity
#
# A neuron's switched hyperplane is the set of inputs $x'$ with $x' \cdot \hat w + \hat b = 0$.
# Its point nearest to $x$ is the **switched centre**
#
# $$\hat c = x - \frac{v\,\hat w}{\hat w \cdot \hat w} \qquad \text{(eq. 6)}$$
#
# (Montavon's nearest root point, with the switched weights). Because $\hat c$ lies on the
# hyperplane, $\hat c \cdot \hat w + \hat b = 0$, and the activity splits into one term per
# input component, a pixel here:
#
# $$v = (x - \hat c) \cdot \hat w = \sum_j (x_j - \hat c_j)\, \hat w_j \qquad \text{(eq. 5)}$$
#
# `slp.switched_centres(f)(x)` returns $\hat c$ for every neuron, shaped like the
# projections (layer shape + input shape). We check both equations on two neurons of the
# dense layer for one test digit: the most active one and the most inactive one.

# %%
x = jnp.asarray(test_x[18])  # a 3
projections = jax.jit(slp.switched_projections(f))(x)
centres = jax.jit(slp.switched_centres(f))(x)

dense, dense_centres = projections[2], centres[2]  # shapes (1, 128, 28, 28, 1), (1, 128)
chosen = {
    "most active": int(jnp.argmax(dense.activity[0])),
    "most inactive": int(jnp.argmin(dense.activity[0])),
}
panels, row_titles = [], []
for label, i in chosen.items():
    w_hat, b_hat, v = dense.weights[0, i], dense.bias[0, i], dense.activity[0, i]
    c_hat = dense_centres[0, i]
    contribution = (x - c_hat) * w_hat  # one term per pixel
    print(f"dense neuron {i} ({label}):")
    print(f"  v                      = {v:+.5f}")
    print(f"  sum_j (x_j - c_j) w_j  = {jnp.sum(contribution):+.5f}   (eq. 5)")
    print(
        f"  c_hat . w_hat + b_hat  = {jnp.sum(c_hat * w_hat) + b_hat:+.1e}"
        "   (c_hat is on the hyperplane)"
    )
    print(f"  |x - c_hat|            = {jnp.linalg.norm(x - c_hat):.4f} = |v| / |w_hat|")
    np.testing.assert_allclose(jnp.sum(contribution), v, rtol=1e-4, atol=1e-5)
    panels.append([x, w_hat, c_hat, x - c_hat, contribution])
    row_titles.append(f"neuron {i}\n{label}\nv = {v:.2f}")

fig = plotting.grid_figure(
    panels,
    col_titles=["x", "w_hat", "c_hat", "x - c_hat", "(x - c_hat) * w_hat"],
    row_titles=row_titles,
    image_columns=(0, 2),
    cell_size=1.8,
)
display(fig)

# %% [markdown]
# Two things to read from this figure. The centre of a neuron is the digit moved along
# $\hat w$ until the neuron switches; for an active neuron the digit is moved against
# $\hat w$, for an inactive one along it (grey images: values outside $[0, 1]$ are clipped in
# the drawing). And with the *nearest* centre every pixel's contribution
# $(x_j - \hat c_j)\hat w_j = v\,\hat w_j^2 / |\hat w|^2$ has the sign of $v$: the
# decomposition says where the neuron is sensitive, scaled by how far $x$ is from switching.
#
# ## Insens, step by step
#
# For each neuron, the vector from its centre to the input is
#
# $$\hat\omega_i = x - \hat c_i = \frac{v_i\,\hat w_i}{\hat w_i \cdot \hat w_i} \qquad
# \text{(eq. 7)}$$
#
# Insens averages it over the set $I$ of **inactive hidden** neurons ($v \le 0$, every ReLU
# layer, output neurons excluded):
#
# $$\hat\Omega(x) = \frac{1}{|I|} \sum_{i \in I} \hat\omega_i \qquad \text{(eq. 8)}$$
#
# An inactive neuron's $\hat\omega$ points from $x$ *away* from the input that would switch
# it on, with length its distance from switching. The inactive neurons are most of the
# network (notebook 1: about two thirds here, 83% in the paper's 2CONV), and their own
# projections are what no gradient-based map looks at. The project's convention
# where the paper is silent: a neuron with $\hat w = 0$ contributes 0 and still counts in
# $|I|$.
#
# By hand, from the projections of every neuron:

# %%
total = jnp.zeros(x.size)
n_inactive = 0
layer_parts = []
for name, p in zip(LAYERS, projections[:-1], strict=True):  # the output layer is not in I
    w_hat = p.weights.reshape(p.activity.size, x.size)  # (neurons, pixels)
    v = p.activity.reshape(-1)
    sq_norm = jnp.sum(w_hat * w_hat, axis=1)
    inactive = v <= 0
    scale = jnp.where(inactive & (sq_norm > 0), v / jnp.where(sq_norm > 0, sq_norm, 1.0), 0.0)
    part = scale @ w_hat  # sum over this layer's inactive neurons of v w_hat / |w_hat|^2
    total, n_inactive = total + part, n_inactive + int(inactive.sum())
    layer_parts.append(part)
    print(
        f"{name:6s}: {int(inactive.sum()):5d} of {v.size:5d} neurons inactive, "
        f"{int(jnp.sum(inactive & (sq_norm == 0)))} of them with w_hat = 0"
    )
omega_by_hand = (total / n_inactive).reshape(x.shape)
print(f"|I| = {n_inactive}")

# %% [markdown]
# For this digit conv 1 holds most of the inactive neurons (7,789 of the 12,485), and no
# inactive neuron has $\hat w = 0$.
#
# The same in one call. `slp.insens(f)` is jit-compiled and never materialises the switched
# weight vectors (the hand computation above held all of them, 19,000 x 784 numbers): it
# gets the squared norms $|\hat w_i|^2$ from structured Jacobian-vector products and the sum
# over $I$ from one vector-Jacobian product.

# %%
insens = slp.insens(f)
omega = insens(x)
difference = float(jnp.max(jnp.abs(omega - omega_by_hand)))
largest = float(jnp.max(jnp.abs(omega)))
print(f"max |slp.insens - by hand| = {difference:.1e}  (max |Insens| = {largest:.1e})")
np.testing.assert_allclose(
    omega, omega_by_hand, rtol=1e-3, atol=1e-3 * float(jnp.max(jnp.abs(omega)))
)

fig = plotting.grid_figure(
    [[x] + [part.reshape(x.shape) / n_inactive for part in layer_parts] + [omega_by_hand, omega]],
    col_titles=["x"] + [f"{name} share" for name in LAYERS] + ["by hand (sum)", "slp.insens"],
    image_columns=(0,),
    cell_size=1.8,
)
display(fig)

# %% [markdown]
# `slp.insens` agrees with the hand computation to float32 rounding (the printed maximum
# difference is about a millionth of the map's size), and the last two panels are the same
# map. Each layer's share (its part of the sum, divided by the total $|I|$) is drawn on its
# own colour scale here; the next section compares the layers on one scale.
#
# ## Insens per layer
#
# Every inactive neuron enters the mean with the same weight, so the layer with the most
# inactive neurons dominates Insens: here conv 1, with 7,789 of the 12,485 (printed above).
# `slp.insens(f, by_layer=True)(x)` returns a `slp.LayerInsens`: `maps[l]`, the mean of
# $\hat\omega_i$ over the inactive neurons $I_l$ of ReLU layer $l$ (forward order, shaped
# like $x$), and `counts[l]` $= |I_l|$. Its `total()` is the $|I_l|$-weighted mean of the
# layer maps, the ordinary Insens. Checked against the hand computation:

# %%
by_layer = slp.insens(f, by_layer=True)
layers = by_layer(x)
for name, layer_map, count, part in zip(
    LAYERS, layers.maps, layers.counts, layer_parts, strict=True
):
    np.testing.assert_allclose(
        layer_map.reshape(-1) * count, part, rtol=1e-3, atol=1e-3 * float(jnp.abs(part).max())
    )
    weight = int(count) / n_inactive
    print(
        f"{name:6s}: |I_l| = {int(count):5d} ({weight:.3f} of |I|), "
        f"max |map| = {float(jnp.abs(layer_map).max()):.1e}, "
        f"max |weighted map| = {weight * float(jnp.abs(layer_map).max()):.1e}"
    )
np.testing.assert_allclose(layers.total(), omega, rtol=1e-3, atol=1e-3 * largest)
print("each map times |I_l| is the layer's sum by hand; LayerInsens.total() is slp.insens(f)(x)")

limit = plotting.symmetric_limit(np.stack([*layers.maps, layers.total()]))
fig, axes = plotting.canvas(1, 6, cell=1.8, left=0.1, top=0.4)
plotting.show_image(axes[0, 0], x, title="x")
for ax, m, title in zip(
    axes[0, 1:5], [*layers.maps, layers.total()], [*LAYERS, "total"], strict=True
):
    image = plotting.heatmap(ax, m, title=title, limit=limit)  # one scale for all four
axes[0, 5].set_axis_off()
fig.colorbar(image, cax=axes[0, 5].inset_axes([0.05, 0.05, 0.12, 0.9]))
display(fig)

# %% [markdown]
# Each layer map times $|I_l|$ is that layer's sum by hand, and `total()` is
# `slp.insens(f)(x)`. On one colour scale only the dense map stands out: the layer maps
# differ in size by two orders of magnitude (largest |value| 1.8e-3, 2.1e-2 and 2.6e-1),
# since each is a mean of steps $\hat\omega_i$ whose lengths are the neurons' distances
# from switching on. Weighted by $|I_l| / |I|$, conv 2's map is the largest part of the
# total (7.8e-3, against 1.1e-3 for conv 1, which has the most neurons but the shortest
# steps, and 1.2e-3 for dense, which has the longest steps but only 61 inactive neurons).
#
# ## Max-pool losers
#
# A max-pool loser (a neuron that is active but loses its pooling window) passes nothing
# on, yet is not in $I$ by default, because $I$ is defined by $v \le 0$.
# `slp.insens(f, include_pool_losers=True)` counts it as inactive too. By hand, with the
# public API only: the activities of the two conv layers come from the projections, and
# the pooling windows are those of `TwoConv` (2x2, stride 2, after each conv layer). The
# winner of a window is its first maximum in row-major order, as in `slp`: ties are
# common, since neurons that see only black background all have the same activity (their
# bias). A loser is an active neuron that is not its window's winner.

# %%
total_pl, n_pl = total, n_inactive
for layer in (0, 1):  # conv 1 and conv 2, each followed by a 2x2 max-pool of stride 2
    p = projections[layer]
    v = p.activity[0]  # (H, W, C)
    h, w, c = v.shape
    # Each window's four activities side by side; the winner is the first maximum.
    windows = v.reshape(h // 2, 2, w // 2, 2, c).transpose(0, 2, 4, 1, 3).reshape(-1, 4)
    first = jax.nn.one_hot(jnp.argmax(windows, axis=1), 4, dtype=bool)
    won = first.reshape(h // 2, w // 2, c, 2, 2).transpose(0, 3, 1, 4, 2).reshape(h, w, c)
    losers = ((v > 0) & ~won).reshape(-1)
    w_hat = p.weights.reshape(v.size, x.size)
    sq_norm = jnp.sum(w_hat * w_hat, axis=1)
    scale = jnp.where(
        losers & (sq_norm > 0), v.reshape(-1) / jnp.where(sq_norm > 0, sq_norm, 1.0), 0.0
    )
    total_pl = total_pl + scale @ w_hat
    n_pl += int(losers.sum())
    print(f"{LAYERS[layer]}: {int(losers.sum())} active pool losers")
omega_pl = slp.insens(f, include_pool_losers=True)(x)
np.testing.assert_allclose(
    omega_pl.reshape(-1), total_pl / n_pl, rtol=1e-3, atol=1e-3 * float(jnp.max(jnp.abs(omega_pl)))
)
print("matches slp.insens(f, include_pool_losers=True)")

# %% [markdown]
# The hand count (3,197 active pool losers in conv 1, 885 in conv 2) reproduces
# `slp.insens(f, include_pool_losers=True)` to float32 rounding.
#
# ## Insens on noisy digits (the paper's Figure 4)
#
# The paper's test: keep the digit clean and cover the rest of the image with Gaussian
# noise, in three ways (`slp.noise`): **bordered** (the digit and a 3-pixel outline clean),
# **background** (only the digit clean) and **framed** (the digit clean, plus as many clean
# pixels as the outline has, but along the image border). The paper gives no noise strength;
# this project uses $\sigma = 2$ on intensities in $[0, 1]$, clipped to $[0, 1]$
# (`slp.noise.DEFAULT_SIGMA`, calibrated in `experiments/mnist_noise.py`). First, how the
# network copes (the paper's own 2CONV: 87%, 32% and 45%):

# %%
sigma = noise.DEFAULT_SIGMA
variants = ("bordered", "background", "framed")
keys = jax.random.split(jax.random.key(1), len(test_x))


@functools.partial(jax.jit, static_argnames="variant")
def make_noisy(keys, images, *, variant):
    return jax.vmap(lambda k, im: noise.make_noisy(variant, k, im, sigma=sigma))(keys, images)


inputs = {"clean": test_x} | {v: np.asarray(make_noisy(keys, test_x, variant=v)) for v in variants}
for name, images in inputs.items():
    print(f"{name:10s} accuracy {training.accuracy(model, params, images, test_y):.3f}")

# %% [markdown]
# Accuracy falls from 0.959 to 0.763 with bordered noise and to 0.229 and 0.230 with
# background and framed noise (the full 2CONV in `results/mnist_noise.json`: 0.8989,
# 0.3143 and 0.2308).
#
# And the maps, for two digits: the gradient (the output neuron's $\hat w$, the saliency map
# of Simonyan et al.), Deep Taylor decomposition (iNNvestigate 1.0's variant, as in the
# paper) and Insens. Red positive, blue negative, each map on its own symmetric scale.
# Gradient and Deep Taylor explain the logit of the true class; Insens has no target: it
# explains the state.

# %%
methods = ("gradient", "deep_taylor", "insens")
compiled = {
    m: jax.jit(jax.vmap(lambda im, t, m=m: slp.attribute(f, im, m, target=t))) for m in methods
}
digits = [18, 4]  # a 3 and a 4
targets = jnp.asarray(test_y[digits])
maps = {
    (c, m): np.asarray(compiled[m](jnp.asarray(inputs[c][digits]), targets))
    for c in inputs
    for m in methods
}
for c in inputs:
    logits = jax.vmap(f)(jnp.asarray(inputs[c][digits]))
    true_logit = np.asarray(logits[jnp.arange(len(digits)), targets])
    print(f"{c:10s} true-class logit {np.round(true_logit, 2)}, predicted {logits.argmax(-1)}")
panels = [
    [
        item
        for k in range(len(digits))
        for item in [inputs[c][digits[k]]] + [maps[c, m][k] for m in methods]
    ]
    for c in inputs
]
fig = plotting.grid_figure(
    panels,
    col_titles=[t for d in digits for t in [f"digit {test_y[d]}", *methods]],
    row_titles=list(inputs),
    image_columns=(0, 1 + len(methods)),
    cell_size=1.5,
)
display(fig)

# %% [markdown]
# An all-white Deep Taylor panel is not a bug: Deep Taylor starts from $\max(f_t(x), 0)$,
# and where the true class's logit is negative (printed above the figure) there is nothing
# to distribute.
#
# In the paper, gradient and the relevance methods lose the digit once the background is
# noisy, while Insens keeps showing it. Two digits are not enough to judge that, so we
# measure it on the first 200 test digits: for each method and noise variant, the rank
# correlation between the map of the noisy digit and that of the clean digit (1: the noise
# changes nothing; `slp.metrics.spearman`), and the share of |map| on the digit and its
# 3-pixel outline, found on the clean image (`slp.metrics.mass_on_mask`; a uniform map
# scores the region's share of the image, printed below). Deep Taylor's undefined
# (all-zero) maps are left out of its means, and counted.

# %%
n_measure = 200
clean_x = jnp.asarray(test_x[:n_measure])
measure_targets = jnp.asarray(test_y[:n_measure])
region = jax.vmap(lambda im: noise.clean_mask("bordered", im))(clean_x)
print(f"the digit and its outline cover {float(region.mean()):.3f} of the image on average")
measured = {
    (c, m): jax.vmap(slp.metrics.pixel_map)(
        compiled[m](jnp.asarray(inputs[c][:n_measure]), measure_targets)
    )
    for c in inputs
    for m in methods
}
rho = {
    (c, m): np.asarray(jax.vmap(slp.metrics.spearman)(measured["clean", m], measured[c, m]))
    for c in variants
    for m in methods
}
share = {
    (c, m): np.asarray(jax.vmap(slp.metrics.mass_on_mask)(measured[c, m], region))
    for c in inputs
    for m in methods
}
header = f"{'':12s}" + "".join(f"{m:>14s}" for m in methods)
for title, values, conditions in (
    ("rank correlation with the map of the clean digit (mean)", rho, variants),
    ("share of |map| on the clean digit and outline (mean)", share, inputs),
):
    print(f"{title}\n{header}")
    for c in conditions:
        print(f"{c:12s}" + "".join(f"{np.nanmean(values[c, m]):14.3f}" for m in methods))
undefined = {c: int(np.isnan(share[c, "deep_taylor"]).sum()) for c in inputs}
print(f"undefined (all-zero) deep_taylor maps of {n_measure}: {undefined}")

# %% [markdown]
# The paper's claim holds here only under bordered noise: there Insens's map changes least
# (rank correlation 0.630 with the clean map, against 0.537 for the gradient and 0.567 for
# Deep Taylor). Under background and framed noise it changes about as much as the
# gradient's (0.266 against 0.282, 0.318 against 0.335), and Deep Taylor, on the 101 and
# 113 of 200 digits where it is defined at all, changes less on framed (0.519). Nor does
# Insens keep its map on the digit: 0.555 to 0.668 under noise, against 0.527 for a uniform
# map (Deep Taylor's 1.000 on clean digits holds by construction, since it is zero on black
# pixels). On the full 2CONV with all 14 registered methods, Insens ranks 4th, 4th and 5th
# by this rank correlation (README, Results; `results/mnist_metrics.json`): robust, but not
# the most robust.
#
# ### Which layer carries the digit under noise?
#
# The same two digits, now Insens per layer (`by_layer=True`), clean and in the three noisy
# variants; the four maps of a row share one colour scale (colour bar on the right).

# %%
rows = [(d, c) for d in digits for c in inputs]
fig, axes = plotting.canvas(len(rows), 6, cell=1.4, left=1.2, top=0.4)
for r, (d, c) in enumerate(rows):
    row_layers = by_layer(jnp.asarray(inputs[c][d]))
    row_maps = [*row_layers.maps, row_layers.total()]
    limit = plotting.symmetric_limit(np.stack(row_maps))
    plotting.show_image(axes[r, 0], inputs[c][d], title="input" if r == 0 else None)
    for ax, m, title in zip(axes[r, 1:5], row_maps, [*LAYERS, "total"], strict=True):
        image = plotting.heatmap(ax, m, title=title if r == 0 else None, limit=limit)
    axes[r, 0].set_ylabel(f"{c}\ndigit {test_y[d]}", rotation=0, ha="right", fontsize=8)
    axes[r, 5].set_axis_off()
    fig.colorbar(image, cax=axes[r, 5].inset_axes([0.05, 0.08, 0.12, 0.84]))
display(fig)

# %% [markdown]
# The dense map sets every row's scale. Clean, all maps follow the strokes; with bordered
# noise the strokes still show in conv 2 and in the total, and partly in dense; with
# background and framed noise every map spreads over the noisy pixels.
#
# Measured on the 200 test digits: per layer, the mean $|I_l|$ and the share of the layer
# map's |values| on the clean digit and its outline.

# %%
per_layer = jax.jit(jax.vmap(lambda im: (lambda li: (li, li.total()))(by_layer(im))))
inactive_rows, share_rows = {}, {}
for c in inputs:
    layer_maps, total_maps = per_layer(jnp.asarray(inputs[c][:n_measure]))
    inactive_rows[c] = [float(np.mean(n)) for n in layer_maps.counts]
    share_rows[c] = [
        float(np.nanmean(jax.vmap(slp.metrics.mass_on_mask)(m, region)))
        for m in (*layer_maps.maps, total_maps)
    ]
header = f"{'':12s}" + "".join(f"{name:>9s}" for name in (*LAYERS, "total"))
print("mean |I_l| per image\n" + header)
for c, row in inactive_rows.items():
    print(f"{c:12s}" + "".join(f"{n:9.0f}" for n in (*row, sum(row))))
print("\nshare of |map| on the clean digit and outline\n" + header)
for c, row in share_rows.items():
    print(f"{c:12s}" + "".join(f"{s:9.3f}" for s in row))
carriers = {c: LAYERS[int(np.argmax(row[:-1]))] for c, row in share_rows.items()}
print("\nlayer with the largest share:", carriers)

# %% [markdown]
# On this network the dense layer keeps the largest share under bordered noise (0.623,
# against 0.517 for conv 1, 0.555 for the total and 0.527 for a uniform map); under
# background and framed noise conv 2 does (0.595 and 0.671, conv 1 close behind on framed
# at 0.667), but there the outline is itself noisy, so these shares count map on noisy
# pixels too. Clean, every layer's map lies mostly on the digit (0.801 to 0.955).
#
# On the full 2CONV of `experiments/mnist_noise.py` the same measure over 1,000 test digits
# is in `results/mnist_noise.md` (figure: `results/mnist_noise_layers.png`). There, on clean
# digits every layer's map lies mostly on the digit and its outline (0.794 to 0.938 of its
# |values|). Under bordered noise (the digit and its outline clean, noise everywhere else)
# the dense layer carries the digit: 0.659 of its map stays there, against 0.469 for conv 1,
# below the 0.534 of a uniform map, and 0.559 for Insens itself, an average in which the two
# conv layers hold 98% of the inactive neurons.
#
# ## Reading an Insens map
#
# Each hidden neuron $i$ is, around $x$, the affine map $v_i = x \cdot \hat w_i + \hat b_i$;
# an inactive one ($v_i \le 0$) would switch on at its hyperplane $v_i = 0$. Its centre
# $\hat c_i$ is the point of that hyperplane nearest to $x$, and
# $\hat\omega_i = x - \hat c_i = v_i \hat w_i / |\hat w_i|^2$ is the step from the centre to
# $x$: its length $|v_i| / |\hat w_i|$ says how far $x$ is from switching the neuron on, its
# direction is that of $-\hat w_i$ (the paper's section 4). Insens is the mean of these steps
# over all inactive hidden neurons, so it is $x$ minus the average centre of the inactive
# neurons (a neuron with $\hat w = 0$ adds a zero step).
#
# - **A positive pixel** (red in the figures) lies, on average, above the inactive neurons'
#   centres: those neurons weigh it negatively, so a lower value there would bring $x$
#   closer to switching them on, and a higher one pushes them further off.
# - **A negative pixel** (blue) lies below their centres: the inactive neurons weigh it
#   positively, so a higher value there would bring $x$ closer to switching them on.
# - **Size** grows with how far the neurons are from switching and with how many of them
#   agree on the sign; zero means that their steps cancel there or that no inactive neuron
#   reads the pixel.
# - **No target class.** The output neurons are not in $I$, so the map is the same for every
#   class and for any output weights: it describes the state of the hidden layers at $x$
#   (which neurons are off, and how firmly), not why one class won. Re-initialising only the
#   output layer of the full 2CONV leaves it unchanged (rank correlation 1.00 with the
#   trained map over 100 digits, `results/mnist_metrics.json`).
# - **Every inactive neuron has the same weight**, so the layers with the most inactive
#   neurons dominate. In the full 2CONV the first convolution has 15,276 of the 25,847
#   inactive hidden neurons of an average clean test digit (59%; from the per-layer active
#   fractions in `results/mnist_noise.json`); `by_layer=True` separates the layers (above).
#
# **A worked example** on the full 2CONV (`results/mnist_noise.json`,
# `results/mnist_metrics.json`). *Is the network's state set by the digit or by the black
# background?* Over the 10,000 clean test digits, a share of 0.932 ± 0.023 of |Insens| lies
# on the digit and its 3-pixel outline, a region that covers 0.527 of the image on average
# (what a uniform map would get). The inactive neurons are therefore held off mostly by what
# happens on and around the strokes; in the clean rows of the figures above the strokes are
# red: the ink there helps keep neurons off, and erasing it would move them towards
# switching on. Now keep the digit clean and put noise on every other pixel ("background",
# σ = 2): accuracy falls to 0.314, and the share of |Insens| on the clean digit and outline
# falls to 0.565 (200 digits), close to the 0.527 of a uniform map. The noisy pixels now
# count about as much as the digit in holding neurons off, in line with the failed
# classifications. What the map cannot tell: which class the network chose, or whether the
# strokes raised that class's score (use a class-specific method for that).
#
# ## `slp` on your own model, in five lines
#
# ## `slp` on your own model, in five lines
#
# Every `slp` function takes a function of **one** example that returns the logits. `slp`
# traces it with JAX, finds the affine maps, ReLUs and max-pools itself, and raises an error
# naming the operation if anything else (tanh, softmax, gelu, ...) acts on the input.
# A flax model (untrained here: nothing below depends on training):


# %%
class SmallCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


cnn = SmallCNN()
cnn_params = cnn.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
batch = jnp.asarray(test_x[:8])

# The five lines:
f_flax = slp.models.as_single_example(cnn, cnn_params)  # x -> cnn.apply(params, x[None])[0]
omega = slp.insens(f_flax)(x)  # Insens map, shaped like x
w_hat = slp.switched_projections(f_flax)(x)[-1].weights  # switched weights of every logit
saliency = slp.attribute(f_flax, x, "integrated_gradients", target=3)  # any method
omegas = jax.vmap(slp.insens(f_flax))(batch)  # a batch: vmap

print(omega.shape, w_hat.shape, saliency.shape, omegas.shape)

# %% [markdown]
# Insens and the integrated-gradients map are shaped like the image, the switched weights
# of the ten logits are (10, 28, 28, 1), and `jax.vmap` adds the batch axis of 8.

# %% [markdown]
# Plain JAX: any function of arrays works, here a two-layer perceptron on a list of
# parameters.

# %%
k1, k2 = jax.random.split(jax.random.key(1))
mlp_params = [
    (jax.random.normal(k1, (784, 32)) / 28.0, jnp.zeros(32)),
    (jax.random.normal(k2, (32, 10)) / 6.0, jnp.zeros(10)),
]


def f_jnp(x):
    (w1, b1), (w2, b2) = mlp_params
    return jax.nn.relu(x.reshape(-1) @ w1 + b1) @ w2 + b2


omega = slp.insens(f_jnp)(x)
projections = slp.switched_projections(f_jnp)(x)
print(omega.shape, [p.weights.shape for p in projections])

# %% [markdown]
# The same calls work on plain JAX: Insens is shaped like $x$, and the switched weights
# are (neurons, 28, 28, 1) per layer, 32 hidden neurons and then 10 logits.

# %% [markdown]
# Equinox models are callables on one example already, so `f = lambda x: model(x)` is all
# there is to it. Equinox is not a dependency of `slp`; the `notebooks` extra installs it
# (`pip install -e ".[notebooks]"`).

# %%
mlp_eqx = eqx.nn.MLP(784, 10, width_size=64, depth=2, activation=jax.nn.relu, key=jax.random.key(2))


def f_eqx(x):
    return mlp_eqx(x.reshape(-1))


omega = slp.insens(f_eqx)(x)
print(
    "equinox",
    eqx.__version__,
    "->",
    omega.shape,
    [p.weights.shape for p in slp.switched_projections(f_eqx)(x)],
)

# %% [markdown]
# The equinox MLP gets the same treatment: switched weights for its two hidden layers of
# 64 neurons and its 10 outputs, and an Insens map shaped like $x$.

# %% [markdown]
# And what happens with a network that is not piecewise linear:

# %%
try:
    slp.insens(lambda x: jnp.tanh(x.reshape(-1) @ mlp_params[0][0]))(x)
except slp.UnsupportedOperationError as err:
    print("UnsupportedOperationError:", err)

# %% [markdown]
# Instead of a map that would be wrong, `slp` raises an error that names the operation
# (tanh) and says which operations it supports.
#
# ## Limitations
#
# What the committed results of the full experiments (`results/`) show against Insens,
# next to where it does well.
#
# - **No target class; the output layer is ignored.** Insens cannot say why a class won or
#   compare classes. In the model-randomisation test its map does not change at all when
#   the output layer is re-initialised (rank correlation 1.00 with the trained map; rank 14
#   of 14 at that step; `results/mnist_metrics.json`).
# - **The magnitude survives randomising the whole network.** After every layer of the
#   MNIST 2CONV is re-initialised, |Insens| still has a rank correlation of 0.755 with the
#   trained network's |Insens| (100 digits); the signed map drops to 0.40. On MNIST |map|
#   therefore says more about the input and the architecture than about the learned
#   weights. On CIFAR-10 it is the other way round: |map| 0.13, signed 0.60 (40 images;
#   `results/cifar10.json`).
# - **Not localised on Pong.** The Insens map of the Pong agent is a lattice repeating
#   across the whole frame (`results/pong.png`; the first convolution has an 8×8 kernel
#   with stride 4): only 0.024 of |Insens| lies on the objects (paddles, ball, score),
#   hardly more than the 0.019 of the frame's pixels that are objects (`results/pong.json`;
#   one game state). On the same state guided backprop puts 0.072 of its map there and
#   LRP α2β1 0.209.
# - **Faithfulness on CIFAR-10 is at or below random.** Deleting pixels in the order of the
#   signed Insens map (most positive first) lowers the true class's probability *less*
#   than a random order does: deletion AUC 0.366 against 0.294 for random (lower is
#   better). It still ranks 5th of 14, because in this order only deep_taylor_bounded
#   (0.279) beats random. Inserting them gives 0.364 against 0.292 for random (rank 9 of
#   14). In |map| order deletion is at the random level (0.288) and insertion ranks 9th
#   (0.409). 100 test images, `results/cifar10.json`.
# - **Faithfulness on MNIST: far better than random, worse than most.** Deletion AUC 0.172
#   against 0.622 for random, but rank 12 of 14; insertion rank 14 of 14 (signed order;
#   `results/mnist_metrics.json`).
# - **Localisation: 10th of 14.** On clean MNIST digits 0.927 of |Insens| lies on the digit
#   and its outline (200 digits; 0.932 over all 10,000 test digits in
#   `results/mnist_noise.json`), rank 10 of 14. Maps that are a multiple of the input
#   (gradient×input, integrated gradients, the LRP rules) score 1.000 there by
#   construction, since they are zero on black pixels.
# - **Robust to noise, but not the most robust:** rank 4, 4 and 5 of 14 on MNIST's
#   bordered, background and framed noise, rank 4 of 14 on CIFAR-10 (README, Results).
# - **Only piecewise-linear networks.** Insens exists for networks built from affine maps
#   (dense layers, convolutions, biases, constant scales such as batch norm at inference,
#   reshapes, sums and concatenations of branches), ReLUs, and max and average pooling. Any
#   other nonlinearity inside the network (tanh, sigmoid, softmax, gelu, leaky ReLU, a min
#   or max with a constant other than `max(z, 0)`, products of two input-dependent values)
#   raises `UnsupportedOperationError`, naming the operation, as the cell above shows; a
#   leaky ReLU can be rewritten as `relu(z) - a * relu(-z)`, which makes two neurons of each
#   unit. Softmax or sigmoid after the logits belongs outside `f`.

# %%
wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
print(f"notebook ran in {wall:.0f} s, {cpu:.0f} s of CPU time")
