"""Source of notebooks/02_insens.ipynb (build: python notebooks/_build.py)."""

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
# then shows Insens on MNIST digits with the paper's noise (its Figure 4), and how to use
# `slp` on a model of your own.
#
# Reference: Szymanski, McCane & Atkinson, arXiv:1909.11275.

# %%
# %matplotlib inline
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from IPython.display import display

import slp
from slp import noise, plotting, training

start, cpu_start = time.perf_counter(), time.process_time()

# %% [markdown]
# The same small 2CONV network as in notebook 1 (`slp.models.TwoConv` with 16 and 32
# channels and 128 hidden units; one seeded epoch on 12,000 MNIST images): its cached
# checkpoint, or trained here if notebook 1 has not run.

# %%
config = training.TrainConfig(
    seed=0,
    epochs=1,
    batch_size=64,
    learning_rate=3e-3,
    num_train=12_000,
    features=(16, 32),
    hidden=128,
)
ck = training.load_or_train_mnist(config, num_test=2_000, progress=False)
model, params = ck.model, ck.params
test_x, test_y = training.load_mnist_float("test", limit=2_000)
accuracy = training.accuracy(model, params, test_x, test_y)
print(f"test accuracy on {len(test_y)} images: {accuracy:.3f}")

f = slp.models.as_single_example(model, params)  # one image (28, 28, 1) -> 10 logits
LAYERS = ("conv 1", "conv 2", "dense")  # the hidden ReLU layers; the output comes last

# %% [markdown]
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
# Each layer's share is drawn on its own colour scale; the last two panels are the same
# map. A max-pool loser (a neuron that is active but loses its pooling window) passes nothing
# on, yet is not in $I$ by default, because $I$ is defined by $v \le 0$.
# `slp.insens(f, include_pool_losers=True)` counts it as inactive too. By hand, the pool
# winners come from the network walker that every `slp` method is built on:

# %%
program = slp.network.trace(f, x)
state = slp.network.forward(program, x)
total_pl, n_pl = total, n_inactive
for pool, layer in enumerate(program.pool_sources):
    p = projections[layer]
    v = p.activity.reshape(-1)
    won = jnp.zeros(v.size, bool).at[state.winners[pool].reshape(-1)].set(True)
    losers = (v > 0) & ~won
    w_hat = p.weights.reshape(v.size, x.size)
    sq_norm = jnp.sum(w_hat * w_hat, axis=1)
    scale = jnp.where(losers & (sq_norm > 0), v / jnp.where(sq_norm > 0, sq_norm, 1.0), 0.0)
    total_pl = total_pl + scale @ w_hat
    n_pl += int(losers.sum())
    print(f"{LAYERS[layer]}: {int(losers.sum())} active pool losers")
omega_pl = slp.insens(f, include_pool_losers=True)(x)
np.testing.assert_allclose(
    omega_pl.reshape(-1), total_pl / n_pl, rtol=1e-3, atol=1e-3 * float(jnp.max(jnp.abs(omega_pl)))
)
print("matches slp.insens(f, include_pool_losers=True)")

# %% [markdown]
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
# In the paper, gradient and the relevance methods lose the digit once the background is
# noisy, while Insens keeps showing it. With this small, briefly trained network the effect
# is to be judged by eye here; notebook 3 puts every registered method side by side and
# measures how much each map changes with the noise. An all-white Deep Taylor panel is not
# a bug: Deep Taylor starts from $\max(f_t(x), 0)$, and where the true class's logit is
# negative (printed above the figure) there is nothing to distribute.
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
# Equinox models are callables on one example already, so `f = lambda x: model(x)` is all
# there is to it. Equinox is not a dependency of `slp`: the cell below runs the example when
# it is installed (`pip install equinox`) and says so otherwise.

# %%
try:
    import equinox as eqx
except ImportError:
    eqx = None

if eqx is None:
    print("equinox is not installed here: skipped (pip install equinox to run this cell)")
else:
    mlp_eqx = eqx.nn.MLP(
        784, 10, width_size=64, depth=2, activation=jax.nn.relu, key=jax.random.key(2)
    )

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
# And what happens with a network that is not piecewise linear:

# %%
try:
    slp.insens(lambda x: jnp.tanh(x.reshape(-1) @ mlp_params[0][0]))(x)
except slp.UnsupportedOperationError as err:
    print("UnsupportedOperationError:", err)

# %%
wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
print(f"notebook ran in {wall:.0f} s, {cpu:.0f} s of CPU time")
