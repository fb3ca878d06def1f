# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Switched linear projections
#
# A ReLU network computes, for each input $x$, a different function, but always an affine one.
# Once we know which neurons are *active* ($v > 0$) and which are *inactive* ($v \le 0$) at
# $x$ (the network's *state*), every neuron's activity is exactly
#
# $$v_i(x) = x \cdot \hat w_i(x) + \hat b_i(x) \qquad \text{(Theorem 1, eq. 2)}$$
#
# where the **switched weight vector** $\hat w_i = W_1^{(x)} W_2^{(x)} \cdots w_i$ is the
# product of the weight matrices with the columns of inactive neurons zeroed, and
# $\hat b_i$ collects the biases that pass through the active neurons. Equivalently
# $\hat w_i = \partial v_i / \partial x$ and $\hat b_i = v_i - x \cdot \hat w_i$.
#
# This notebook shows the idea on a network with two inputs, where the regions of constant
# state can be drawn, and then on a small convolutional network trained on MNIST, where
# $\hat w$ of one neuron is a different picture for every digit (the paper's Figure 2).
#
# Reference: L. Szymanski, B. McCane, C. Atkinson, *Switched linear projections and inactive
# state sensitivity for deep neural network interpretability*, arXiv:1909.11275, section 3.
# Everything below is seeded and runs on a CPU; the last cell prints how long it took.

# %%
# %matplotlib inline
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
import tutorial
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D

import slp
from slp import plotting

start, cpu_start = time.perf_counter(), time.process_time()
print("slp", slp.__version__, "| jax", jax.__version__, "| devices", jax.devices())

# %% [markdown]
# ## A ReLU network with two inputs
#
# Plain JAX, no framework: the parameters are a list of `(W, b)` pairs and the network is a
# function of **one** example $x \in \mathbb{R}^2$, the form every `slp` transform takes.
# Two hidden layers of 8 ReLUs, two output logits (row-vector convention, $h W + b$, as in
# the paper). We train it for a few hundred steps to tell the points inside a disc from
# those outside.

# %%
SIZES = (2, 8, 8, 2)


def init_mlp(key, sizes):
    params = []
    for k, m, n in zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:], strict=True):
        kw, kb = jax.random.split(k)
        params.append(
            (jax.random.normal(kw, (m, n)) * jnp.sqrt(2.0 / m), 0.1 * jax.random.normal(kb, (n,)))
        )
    return params


def mlp(params, x):
    h = x
    for w, b in params[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = params[-1]
    return h @ w + b


key_init, key_data = jax.random.split(jax.random.key(0))
points = jax.random.uniform(key_data, (1024, 2), minval=-3.0, maxval=3.0)
labels = (jnp.sum(points**2, axis=1) < 2.0).astype(jnp.int32)  # inside the disc of radius 1.41
optimizer = optax.adam(0.02)


@jax.jit
def train_step(params, opt_state):
    def loss_fn(p):
        logits = jax.vmap(lambda x: mlp(p, x))(points)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss


params2d = init_mlp(key_init, SIZES)
opt_state = optimizer.init(params2d)
for _ in range(600):
    params2d, opt_state, loss = train_step(params2d, opt_state)
accuracy2d = jnp.mean(jax.vmap(lambda x: mlp(params2d, x))(points).argmax(-1) == labels)
print(f"toy network: loss {loss:.3f}, training accuracy {accuracy2d:.3f}")


def f2d(x):
    return mlp(params2d, x)


# %% [markdown]
# ### The state divides the input space into regions
#
# `slp.activation_pattern(f)(x)` returns, per ReLU layer, which neurons are active at `x`
# (activity $v > 0$). Evaluated on a grid, every distinct pattern is one region
# on which the network is one affine map. Layer 1's neurons switch along straight lines
# across the whole plane (left); layer 2's switch along lines that bend wherever a layer-1
# neuron switches (right). The black curve is the decision boundary: piecewise linear too.
# Each region has a random colour of its own (the colours carry no values, so there is no
# colour scale).

# %%
n_grid = 300
axis = jnp.linspace(-3.0, 3.0, n_grid)
grid = jnp.stack(jnp.meshgrid(axis, axis[::-1]), axis=-1).reshape(-1, 2)  # row 0 is the top
# The state is activity > 0 per layer: slp.activation_pattern(f2d)(x) for one point. For
# the 90,000 grid points we compare slp.activities with 0 ourselves, since under jax.vmap
# activation_pattern's check that the input is finite runs once per point.
activities = jax.jit(jax.vmap(slp.activities(f2d)))(grid)  # per layer: (n_grid**2, 8)
bits = np.concatenate([np.asarray(a) > 0 for a in activities], axis=1)
_, region_l1 = np.unique(bits[:, : SIZES[1]], axis=0, return_inverse=True)
_, region = np.unique(bits, axis=0, return_inverse=True)
region_l1 = region_l1.reshape(n_grid, n_grid)
region = region.reshape(n_grid, n_grid)
margin = jax.vmap(f2d)(grid) @ jnp.array([-1.0, 1.0])  # logit "inside" minus "outside"

x_a = jnp.array([0.5, -0.3])
x_b = jnp.array([-1.9, 1.2])
rng = np.random.default_rng(0)
fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
for ax, reg, title in zip(
    axes, (region_l1, region), ("state of layer 1", "state of both layers"), strict=True
):
    palette = rng.uniform(0.35, 1.0, size=(reg.max() + 1, 3))
    ax.imshow(palette[reg], extent=(-3, 3, -3, 3))
    ax.contour(axis, axis[::-1], margin.reshape(n_grid, n_grid), levels=[0.0], colors="k")
    for name, p in (("$x_a$", x_a), ("$x_b$", x_b)):
        ax.plot(*p, "k*", ms=12)
        ax.annotate(name, p, xytext=(6, 6), textcoords="offset points", fontsize=12)
    ax.set_title(f"{title}: {reg.max() + 1} regions")
plt.show()
print(
    f"regions on the grid: {region_l1.max() + 1} by the state of layer 1, "
    f"{region.max() + 1} by the state of both layers"
)

# %% [markdown]
# The 8 neurons of layer 1 cut the square into 26 regions (printed above), and the 16 hidden
# neurons together into 137: on each of them the network is a different affine map, and the
# decision boundary, a polygon here, bends only where it crosses from one region into the
# next.
#
# ### The active subnetwork
#
# At a given input only the active neurons pass anything on: the network *is* the
# subnetwork of active neurons, a product of matrices with the inactive columns removed.
# Two inputs from different regions use different subnetworks (coloured edges: red positive,
# blue negative weights, width by magnitude; hollow circles are inactive neurons).


# %%
def draw_subnetwork(ax, params, pattern, title):
    active = (
        [np.ones(SIZES[0], bool)] + [np.asarray(p) for p in pattern] + [np.ones(SIZES[-1], bool)]
    )
    ys = [np.linspace(-1, 1, n) if n > 1 else np.zeros(1) for n in SIZES]
    scale = max(float(jnp.max(jnp.abs(w))) for w, _ in params)
    for layer, (w, _) in enumerate(params):
        for i in range(SIZES[layer]):
            for j in range(SIZES[layer + 1]):
                xs, y = [layer, layer + 1], [ys[layer][i], ys[layer + 1][j]]
                if active[layer][i] and active[layer + 1][j]:
                    wij = float(w[i, j])
                    ax.plot(
                        xs,
                        y,
                        color="tab:red" if wij > 0 else "tab:blue",
                        lw=0.3 + 3 * abs(wij) / scale,
                    )
                else:
                    ax.plot(xs, y, color="0.88", lw=0.5, zorder=0)
    for layer, n in enumerate(SIZES):
        on = active[layer]
        ax.scatter(
            np.full(n, layer), ys[layer], s=90, c=np.where(on, "k", "w"), edgecolors="k", zorder=3
        )
    ax.set_xticks(range(len(SIZES)), ["input", "hidden 1", "hidden 2", "output"])
    ax.set_yticks([])
    ax.set_title(title)


fig, axes = plt.subplots(1, 2, figsize=(10, 4.1))
for ax, (name, p) in zip(axes, (("$x_a$", x_a), ("$x_b$", x_b)), strict=True):
    pattern = slp.activation_pattern(f2d)(p)
    n_on = sum(int(q.sum()) for q in pattern)
    draw_subnetwork(ax, params2d, pattern, f"{name}: {n_on} of 16 hidden neurons active")
    print(f"{name[1:-1]}: active hidden neurons per layer {[int(q.sum()) for q in pattern]}")
key = [
    Line2D([], [], color="tab:red", lw=2, label="positive weight"),
    Line2D([], [], color="tab:blue", lw=2, label="negative weight"),
    Line2D([], [], color="0.88", lw=2, label="to or from an inactive neuron"),
    Line2D([], [], ls="", marker="o", mfc="k", mec="k", label="active neuron"),
    Line2D([], [], ls="", marker="o", mfc="w", mec="k", label="inactive neuron"),
]
fig.legend(handles=key, loc="lower center", ncol=5, fontsize=8, frameon=False)
fig.subplots_adjust(bottom=0.16)
plt.show()

# %% [markdown]
# $x_a$ runs through 5 of the 16 hidden neurons, $x_b$ through 9 (per layer: printed above),
# and the two subnetworks share only the neurons that are on for both: two inputs, two
# different linear models.
#
# ### Theorem 1, numerically
#
# `slp.switched_projections(f)(x)` returns one `Projection(weights, bias, activity)` per ReLU
# layer and one for the output: $\hat w$ (shape: layer shape + input shape), $\hat b$ and $v$.
# We check $v = x \cdot \hat w + \hat b$ for every neuron, and rebuild the output neurons'
# $\hat w$ and $\hat b$ by hand from the paper's formula: the weight matrices with inactive
# columns zeroed, multiplied together.

# %%
projections = slp.switched_projections(f2d)(x_a)
for name, p in zip(("hidden 1", "hidden 2", "output"), projections, strict=True):
    error = jnp.max(jnp.abs(p.weights @ x_a + p.bias - p.activity))
    print(f"{name:9s} v = {np.array2string(np.asarray(p.activity), precision=2)}")
    print(f"{'':9s} max |v - (x.w_hat + b_hat)| = {error:.1e}")

(w1, b1), (w2, b2), (w3, b3) = params2d
m1, m2 = (np.asarray(q, np.float32) for q in slp.activation_pattern(f2d)(x_a))
w_hat_by_hand = (w1 * m1) @ (w2 * m2) @ w3  # (inputs, outputs): W1^(x) W2^(x) W3
b_hat_by_hand = ((b1 * m1) @ w2 + b2) * m2 @ w3 + b3
out = projections[-1]
np.testing.assert_allclose(out.weights, w_hat_by_hand.T, rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(out.bias, b_hat_by_hand, rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(out.weights, jax.jacobian(f2d)(x_a), rtol=1e-5, atol=1e-6)
print("output w_hat (one row per logit):\n", np.asarray(out.weights))
print("matches W1^(x) W2^(x) W3 by hand and the Jacobian of f at x_a")

# %% [markdown]
# Theorem 1 holds for every neuron of the three layers, to float32 rounding (at most 3.8e-06,
# on output activities of size 33), and the output's $\hat w$ and $\hat b$ are the paper's
# masked matrix product, built by hand, and the Jacobian of $f$ (the assertions above would
# stop the notebook otherwise).

# %% [markdown]
# ### Inside its region the network *is* that affine map
#
# Take the output's $(\hat w, \hat b)$ at $x_a$ and use it as a linear model everywhere.
# It agrees with the network exactly (to float32 rounding) on $x_a$'s whole region (outlined)
# and nowhere else: the error grows with the distance to the region. The network is a
# patchwork of such linear models, one per state.

# %%
logits = jax.vmap(f2d)(grid)
linear = grid @ out.weights.T + out.bias
error = np.asarray(jnp.max(jnp.abs(logits - linear), axis=1)).reshape(n_grid, n_grid)
bits_a = np.concatenate([np.asarray(q) for q in slp.activation_pattern(f2d)(x_a)])
in_region = np.all(bits == bits_a, axis=1).reshape(n_grid, n_grid)  # same state as x_a
print(f"largest error inside the region of x_a: {error[in_region].max():.1e}")
print(f"smallest error outside it:              {error[~in_region].min():.1e} (at its border)")
print(f"median error outside it:                {np.median(error[~in_region]):.2f}")

fig, ax = plt.subplots(figsize=(5.6, 4.6))
im = ax.imshow(
    np.maximum(error, 1e-7), extent=(-3, 3, -3, 3), norm=LogNorm(1e-7, error.max()), cmap="magma"
)
ax.contour(axis, axis[::-1], in_region, levels=[0.5], colors="c", linewidths=1.5)
ax.plot(*x_a, "c*", ms=12)
ax.set_title("|f(x) - (x.w_hat(x_a) + b_hat(x_a))|")
fig.colorbar(im, ax=ax, label="largest error over the two logits (log scale)")
plt.show()

# %% [markdown]
# On $x_a$'s region (cyan outline) the linear model and the network differ by at most
# 7.6e-06, float32 rounding; outside it the smallest difference is 1.7e-03, right at the
# border, and the median 50.03. The affine map of $x_a$ is the network on that region, and
# only there.

# %% [markdown]
# ## A convolutional network on MNIST
#
# Now a small version of the paper's "2CONV" network (`slp.models.TwoConv`: conv 5x5 +
# max-pool, conv 5x5 + max-pool, one hidden dense layer, linear output; here with 16 and 32
# channels and 128 hidden units instead of 32, 64 and 1024), trained for one epoch on the
# first 12,000 MNIST training images (seeded and deterministic).
# `tutorial.mnist_2conv` (in `notebooks/tutorial.py`, shared by the three notebooks) holds
# this `slp.training.TrainConfig` and calls `slp.training.load_or_train_mnist`, which trains
# the network the first time and keeps the checkpoint in `~/.cache/slp/checkpoints` (or
# `$SLP_DATA_DIR`), where notebooks 2 and 3 find it; it returns the model, its parameters,
# the first 2,000 MNIST test images with their labels, and the accuracy on them. MNIST is
# downloaded there too on first use.

# %%
model, params, test_x, test_y, accuracy = tutorial.mnist_2conv()
print(f"test accuracy on {len(test_y)} images: {accuracy:.3f}")

f = slp.models.as_single_example(model, params)  # one image (28, 28, 1) -> 10 logits

# %% [markdown]
# Each `Projection` has the layer's shape followed by the input's shape. The ReLU layers are
# those of the traced program: a flax model applied to `x[None]` keeps a batch axis of 1.

# %%
project = jax.jit(slp.switched_projections(f))
x0 = jnp.asarray(test_x[0])
projections = project(x0)
for name, p in zip(("conv 1", "conv 2", "dense", "output"), projections, strict=True):
    v_from_projection = jnp.sum(p.weights * x0, axis=(-3, -2, -1)) + p.bias
    error = float(jnp.max(jnp.abs(v_from_projection - p.activity)))
    scale = float(jnp.max(jnp.abs(p.activity)))
    print(
        f"{name:6s} w_hat {str(p.weights.shape):28s} "
        f"max |v - (x.w_hat + b_hat)| = {error:.1e}  (max |v| = {scale:.1f})"
    )

explicit = slp.explicit_projections(f)(x0)  # the paper's matrix products, no autodiff
print(
    "largest difference to the explicit matrix-product route: "
    + "{:.1e}".format(
        max(
            float(jnp.max(jnp.abs(a.weights - b.weights)))
            for a, b in zip(projections, explicit, strict=True)
        )
    )
)

# %% [markdown]
# On a digit, too, every neuron of every layer is its switched linear projection: the
# largest error is 5.7e-06, against activities up to 12.8, and the autodiff route and the
# paper's explicit matrix products agree to 1.5e-07.

# %% [markdown]
# How sparse is the state? The paper reports that about 17% of its 2CONV's neurons are
# active for an MNIST digit. Our smaller network, on 500 test digits:

# %%
acts = jax.jit(jax.vmap(slp.activities(f)))(jnp.asarray(test_x[:500]))
on = [np.asarray(a > 0).reshape(500, -1) for a in acts]
for name, o in zip(("conv 1", "conv 2", "dense"), on, strict=True):
    print(f"{name:6s} {o.shape[1]:6d} neurons, {o.mean():.1%} active on average")
print(f"all hidden neurons: {np.concatenate(on, axis=1).mean():.1%} active on average")

# %% [markdown]
# In this smaller network 32.7% of the hidden neurons are active on an average digit, about
# twice the paper's 17%: its state is less sparse, but most neurons are still off, which is
# what Insens (notebook 2) is built on.

# %% [markdown]
# ## A neuron is not a fixed pattern detector (the paper's Figure 2)
#
# For a linear model, the weight vector is the same for every input. For a deep ReLU
# network, $\hat w$ of a neuron changes with the input: which pattern the neuron "looks for"
# depends on the state that the rest of the network is in. Below, for one test digit of each
# class (columns), the switched weight vector of four neurons (rows), red positive, blue
# negative, white zero, with its activity $v$ and switched bias $\hat b$ above it. The eight
# maps of a row share one symmetric colour scale (colour bar on the right), so that a
# change of size from digit to digit shows too:
#
# - a **conv 1** neuron at the image centre: no ReLU lies before it, so its $\hat w$ is its
#   5x5 kernel for every digit, and only $v$ changes;
# - a **conv 2** neuron at the centre: its $\hat w$ depends on which conv-1 neurons and pool
#   winners around it are on, so it can change from digit to digit, but only inside its
#   14x14 receptive field (these two rows show the central 16x16 pixels);
# - two neurons of the **dense** layer: the one most often active on the 500 digits above
#   and the one active closest to half of the time. Their $\hat w$ spans the whole image.

# %%
frequency = [o.mean(axis=0) for o in on]
conv1_freq = frequency[0].reshape(28, 28, -1)[14, 14]
conv2_freq = frequency[1].reshape(14, 14, -1)[7, 7]
c1, c2 = int(np.argmax(conv1_freq)), int(np.argmax(conv2_freq))
dense_a, dense_b = int(np.argmax(frequency[2])), int(np.argmin(np.abs(frequency[2] - 0.5)))
centre = (slice(6, 22), slice(6, 22))
neurons = {  # label: (layer, neuron index, pixels shown)
    f"conv 1\nchannel {c1}\nat (14, 14)": (0, (0, 14, 14, c1), centre),
    f"conv 2\nchannel {c2}\nat (7, 7)": (1, (0, 7, 7, c2), centre),
    f"dense\nneuron {dense_a}": (2, (0, dense_a), np.s_[:, :]),
    f"dense\nneuron {dense_b}": (2, (0, dense_b), np.s_[:, :]),
}
examples = [int(np.flatnonzero(test_y == c)[0]) for c in range(8)]

# Per digit and neuron: (v, b_hat, w_hat over the pixels shown).
panels = {name: [] for name in neurons}
for i in examples:
    projections = project(jnp.asarray(test_x[i]))
    for name, (layer, idx, shown) in neurons.items():
        p = projections[layer]
        w_hat = np.asarray(p.weights[idx])[shown]
        panels[name].append((float(p.activity[idx]), float(p.bias[idx]), w_hat))

n_cols = len(examples) + 1  # the last column holds the colour bars
fig, axes = plt.subplots(
    1 + len(neurons), n_cols, figsize=(1.45 * n_cols, 1.75 * (1 + len(neurons)))
)
for col, i in enumerate(examples):
    plotting.show_image(axes[0, col], test_x[i], title=f"digit {test_y[i]}")
for row, (name, row_panels) in enumerate(panels.items(), start=1):
    limit = plotting.symmetric_limit(np.stack([w for _, _, w in row_panels]))
    for col, (v, b, w_hat) in enumerate(row_panels):
        title = f"$v$ = {v:.2f}\n$\\hat b$ = {b:.2f}"
        image = plotting.heatmap(axes[row, col], w_hat, title=title, limit=limit)
    axes[row, 0].set_ylabel(name, fontsize=8)
    axes[row, -1].set_axis_off()
    bar = fig.colorbar(image, cax=axes[row, -1].inset_axes([0.05, 0.05, 0.12, 0.9]))
    bar.ax.tick_params(labelsize=7)
    bar.set_label("$\\hat w$", fontsize=8)
axes[0, -1].set_axis_off()
fig.tight_layout()
plt.show()

# %% [markdown]
# How different are the weight vectors? $\hat w_i = \partial v_i / \partial x$ (Theorem 1),
# so one reverse-mode pass per neuron gives the four neurons' $\hat w$ on all 500 digits
# (checked against the projections of the eight digits above). For each neuron, the cosine
# similarity between its $\hat w$ on two digits, over all pairs of the 500 digits (1: the
# same vector up to its length), and the ratio of the largest to the smallest $|\hat w|$:


# %%
def chosen_activities(x):  # the activities v of the four neurons, shape (4,)
    acts = slp.activities(f)(x)
    return jnp.stack([acts[layer][idx] for layer, idx, _ in neurons.values()])


w_hat_of = jax.jit(jax.vmap(jax.jacrev(chosen_activities)))  # (n, 4, 28, 28, 1)
w_examples = np.asarray(w_hat_of(jnp.asarray(test_x[examples])))
for k, (name, (_, _, shown)) in enumerate(neurons.items()):
    w_shown = w_examples[:, k][(slice(None), *shown)]
    np.testing.assert_allclose(w_shown, [w for _, _, w in panels[name]], rtol=1e-4, atol=1e-6)

w_all = np.asarray(w_hat_of(jnp.asarray(test_x[:500]))).reshape(500, len(neurons), -1)
norms = np.linalg.norm(w_all, axis=-1)
unit = w_all / norms[..., None]
upper = np.triu_indices(500, k=1)  # every pair of distinct digits once
similarity = {}
print(f"{'neuron':24s}{'mean cosine':>12s}{'5th pct':>9s}{'min':>8s}{'max/min |w_hat|':>17s}")
for k, name in enumerate(neurons):
    cosine = (unit[:, k] @ unit[:, k].T)[upper]
    similarity[name] = cosine
    label = name.replace("\n", " ")
    print(
        f"{label:24s}{cosine.mean():12.3f}{np.percentile(cosine, 5):9.3f}{cosine.min():8.3f}"
        f"{norms[:, k].max() / norms[:, k].min():17.2f}"
    )

# %% [markdown]
# The figure and the numbers say the same. The conv-1 neuron's $\hat w$ is one vector for
# all 500 digits (cosine 1.000 for every pair, and the same length). The other three change
# with the digit: the mean cosine between two digits' $\hat w$ is 0.316 for the conv-2
# neuron and 0.208 and 0.274 for the dense neurons, some pairs point in partly opposite
# directions (cosines down to -0.165), and the lengths differ by factors up to 2.03. A
# neuron's $\hat w$ on one digit says little about its $\hat w$ on another. This is why
# the paper reads $\hat w$ per input, as the input-specific linear model that the network
# applies, and not as a feature the neuron stands for. Notebook 2 builds on it: the
# switched centres, and Insens.

# %%
wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
print(f"notebook ran in {wall:.0f} s, {cpu:.0f} s of CPU time")
