"""Source of notebooks/03_comparing_methods.ipynb (build: python notebooks/_build.py)."""

# %% [markdown]
# # 3. Comparing attribution methods
#
# `slp` keeps every attribution method in one registry: `slp.available_methods()` lists
# them and `slp.attribute(f, x, method, target=...)` runs any of them on one example. This
# notebook puts all of them side by side on clean and noisy MNIST digits (the paper's
# Figure 4, which compares methods by eye), and then measures what the figure shows, on a
# small sample, with `slp.metrics`:
#
# - **robustness**: how similar a method's map stays when the background gets noisy;
# - **locality**: how much of the map lies on the digit and its outline;
# - **faithfulness**: how fast the network's confidence falls when the pixels a map ranks
#   highest are deleted, and rises when they are inserted (deletion/insertion curves);
# - **model randomisation**: how much a map changes when the network's layers are
#   re-initialised (Adebayo et al.'s sanity check).
#
# The last cell says what these numbers do and do not show.

# %%
# %matplotlib inline
import inspect
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

import slp
from slp import metrics, noise, plotting, training
from slp.attributions import get_method

start, cpu_start = time.perf_counter(), time.process_time()

# %% [markdown]
# The same small 2CONV network as in notebooks 1 and 2 (one seeded epoch on 12,000 MNIST
# images): its cached checkpoint, or trained here if no earlier notebook has run.

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


def apply(p, x):  # one image (28, 28, 1) -> 10 logits, for any parameters p of the network
    return model.apply(p, x[None])[0]


def f(x):
    return apply(params, x)


# %% [markdown]
# ## Every registered method
#
# The registry is read at run time, so methods added to `slp` show up here. A method that
# draws random numbers (SmoothGrad) takes a `key` option: it gets one key per image. A
# method with another option that has no default is skipped with a message. Each method is
# compiled once, `jax.jit` of `jax.vmap` over a batch, with the parameters as an argument so
# that the randomised networks further down reuse the same program. Every map explains the
# true class (`target` = label); Insens has no target, it explains the network's state.

# %%
N = 16  # images measured
images, labels = test_x[:N], test_y[:N]
image_keys = jax.random.split(jax.random.key(0), N)


def compile_method(name):
    options = inspect.signature(get_method(name)).parameters
    takes_key = "key" in options

    def one(p, x, target, key):
        extra = {"key": key} if takes_key else {}
        return slp.attribute(lambda z: apply(p, z), x, name, target=target, **extra)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))


methods, runners = [], {}
for name in slp.available_methods():
    options = inspect.signature(get_method(name)).parameters.values()
    missing = [
        o.name
        for o in options
        if o.kind is inspect.Parameter.KEYWORD_ONLY
        and o.default is inspect.Parameter.empty
        and o.name not in ("target", "key")
    ]
    if missing:
        print(f"skipped {name}: needs option(s) {missing}")
        continue
    methods.append(name)
    runners[name] = compile_method(name)
print(f"{len(methods)} methods:", ", ".join(methods))


def attribution_maps(name, p, x):  # maps (N, 28, 28, 1) for the N images x
    return np.asarray(runners[name](p, jnp.asarray(x), jnp.asarray(labels), image_keys))


# %% [markdown]
# The inputs: the clean digits and the paper's three noisy variants (`slp.noise`,
# $\sigma$ = `slp.noise.DEFAULT_SIGMA` = 2 on intensities in $[0, 1]$; see notebook 2).

# %%
variants = ("bordered", "background", "framed")
inputs = {"clean": images}
for v in variants:
    noisy = jax.jit(
        jax.vmap(lambda k, x, v=v: noise.make_noisy(v, k, x, sigma=noise.DEFAULT_SIGMA))
    )
    inputs[v] = np.asarray(noisy(jax.random.split(jax.random.key(1), N), jnp.asarray(images)))

t0 = time.perf_counter()
maps = {(c, m): attribution_maps(m, params, inputs[c]) for m in methods for c in inputs}
seconds = time.perf_counter() - t0
print(f"{len(methods)} methods x {len(inputs)} conditions x {N} images: {seconds:.0f} s")

# %%
shown = [0, 2]  # a 7 and a 1
rows, row_titles = [], []
for i in shown:
    for c in ("clean", "bordered"):
        rows.append([inputs[c][i]] + [maps[c, m][i] for m in methods])
        row_titles.append(f"{c}\n(digit {labels[i]})")
fig = plotting.grid_figure(
    rows,
    col_titles=["input"] + [m.replace("_", "\n", 1) for m in methods],
    row_titles=row_titles,
    cell_size=1.05,
)
display(fig)

# %% [markdown]
# ## Measuring the maps
#
# All measures below work on pixel maps (`metrics.pixel_map` sums channels; MNIST has one),
# averaged over the 16 images (undefined values, such as the rank correlation of an
# all-zero map, are left out of the means).
#
# - **Robustness**, per noisy variant: Spearman rank correlation between the map of the
#   clean digit and the map of its noisy version (1: the same ranking of pixels).
# - **On region**: the share of the map's absolute mass on the digit and its 3-pixel outline
#   (`metrics.mass_on_mask` with `noise.clean_mask("bordered", x)`), for the *bordered*
#   input. A map spread evenly over the image scores the region's share of the image area.
# - **Deletion / insertion**: pixels are set to 0 (the MNIST background), the highest
#   values of the signed map first, and the area under the true class's softmax probability
#   is taken (`metrics.deletion_curve`, `metrics.insertion_curve`, `metrics.curve_area`);
#   shown as the difference to a random pixel order. Deletion: lower is better;
#   insertion: higher is better.

# %%
to_pixels = jax.vmap(metrics.pixel_map)
region = np.asarray(jax.vmap(lambda x: noise.clean_mask("bordered", x))(jnp.asarray(images)))


@jax.jit
def areas(x, scores, target):
    def one(xi, si, ti):
        deletion = metrics.deletion_curve(f, xi, si, target=ti, steps=28)
        insertion = metrics.insertion_curve(f, xi, si, target=ti, steps=28)
        return (
            metrics.curve_area(deletion.fraction, deletion.probability),
            metrics.curve_area(insertion.fraction, insertion.probability),
            deletion.probability,
        )

    return jax.vmap(one)(x, scores, target)


random_scores = jax.vmap(lambda k: metrics.random_scores(k, (28, 28)))(
    jax.random.split(jax.random.key(2), N)
)
random_del, random_ins, random_curve = areas(
    jnp.asarray(images), random_scores, jnp.asarray(labels)
)

results = {}
for m in methods:
    clean = to_pixels(maps["clean", m])
    row = {}
    for v in variants:
        row[f"rho {v}"] = float(
            np.nanmean(jax.vmap(metrics.spearman)(clean, to_pixels(maps[v, m])))
        )
    row["on region"] = float(
        np.nanmean(jax.vmap(metrics.mass_on_mask)(to_pixels(maps["bordered", m]), region))
    )
    deletion, insertion, curve = areas(jnp.asarray(images), clean, jnp.asarray(labels))
    row["deletion - random"] = float(jnp.mean(deletion - random_del))
    row["insertion - random"] = float(jnp.mean(insertion - random_ins))
    row["curve"] = np.asarray(curve).mean(axis=0)
    results[m] = row

columns = [k for k in results[methods[0]] if k != "curve"]
print(f"{'method':22s}" + "".join(f"{c:>20s}" for c in columns))
for m in methods:
    print(f"{m:22s}" + "".join(f"{results[m][c]:20.3f}" for c in columns))
print(f"{'(uniform / random)':22s}{'':60s}{region.mean():20.3f}{0:20.3f}{0:20.3f}")

# %%
tab20 = plt.get_cmap("tab20")
others = [m for m in methods if m != "insens"]
shades = [i for i in (*range(0, 20, 2), *range(1, 20, 2)) if i not in (6, 7)]  # no reds
colour = {m: tab20(shades[k % len(shades)]) for k, m in enumerate(others)} | {"insens": "red"}
style = {m: 2.5 if m == "insens" else 1.0 for m in methods}

fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [3, 2, 2]})
pos = np.arange(len(methods))
for k, v in enumerate(variants):
    axes[0].bar(pos + (k - 1) * 0.27, [results[m][f"rho {v}"] for m in methods], 0.27, label=v)
axes[0].set_ylabel("Spearman, clean vs noisy map")
axes[0].legend(fontsize=8)
axes[1].bar(pos, [results[m]["on region"] for m in methods], color="0.4")
axes[1].axhline(region.mean(), color="k", ls="--", lw=1, label="uniform map")
axes[1].set_ylabel("share of |map| on digit + outline (bordered)")
axes[1].legend(fontsize=8)
for ax in axes[:2]:
    ax.set_xticks(pos, methods, rotation=70, ha="right", fontsize=8)
fraction = np.linspace(0, 1, len(random_curve[0]))
for m in methods:
    axes[2].plot(fraction, results[m]["curve"], color=colour[m], lw=style[m], label=m)
axes[2].plot(fraction, np.asarray(random_curve).mean(axis=0), "k--", label="random order")
axes[2].set_xlabel("fraction of pixels deleted (highest signed value first)")
axes[2].set_ylabel("probability of the true class")
axes[2].legend(fontsize=6, ncol=2)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Model randomisation
#
# A map that explains the network should change when the network does. Following Adebayo
# et al. (2018), `metrics.cascading_randomization` re-initialises the layers one at a time
# from the output layer down; we measure the Spearman correlation of each map with the
# trained network's map, on the clean digits. A method whose correlation stays near 1 shows
# mostly the input, not what the network learnt.
#
# Insens is a special case by construction: the output neurons are not in its set $I$, so
# re-initialising the output layer leaves it exactly unchanged, and the dense layer holds 128
# of its roughly 19,000 hidden neurons, so the map changes mostly when the conv layers do.
# The check shows which layers a method listens to.

# %%
fresh = model.init(jax.random.key(3), jnp.zeros((1, 28, 28, 1)))
cascade = metrics.cascading_randomization(params, fresh)
steps = [name for name, _ in cascade]
randomised = {m: [] for m in methods}
for _, p in cascade:
    for m in methods:
        rho = jax.vmap(metrics.spearman)(
            to_pixels(maps["clean", m]), to_pixels(attribution_maps(m, p, images))
        )
        randomised[m].append(float(np.nanmean(rho)))

fig, ax = plt.subplots(figsize=(8, 4))
for m in methods:
    ys = [1.0] + randomised[m]
    ax.plot(range(len(ys)), ys, "o-", color=colour[m], lw=style[m], ms=3, label=m)
ax.set_xticks(range(len(steps) + 1), ["trained"] + [f"+ {s}" for s in steps])
ax.set_xlabel("layers re-initialised, from the output down")
ax.set_ylabel("Spearman with the trained map")
ax.legend(fontsize=7, ncol=2, bbox_to_anchor=(1.02, 1), loc="upper left")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What these numbers show, and what they do not
#
# - **They are about one small network and 16 digits.** The network is a reduced 2CONV
#   trained for one epoch, not the paper's; 16 images give means with wide error bars. For
#   the full-size network and hundreds of images, run `experiments/mnist_metrics.py`.
# - **Robustness is not correctness.** A map that ignores the input entirely (or one that
#   only shows the input's edges) is perfectly robust. High similarity between clean and
#   noisy maps says that the noise did not move the map; it does not say the map explains
#   the decision. And the noise changes the network's state and often its prediction
#   (notebook 2), so a map *should* change somewhat: the paper's claim is that Insens keeps
#   showing the digit, not that it stays the same.
# - **Locality assumes that the evidence is on the digit.** The share on the digit and its
#   outline rewards maps that stay there. But a network may really use the background (an
#   empty region where a stroke would be is evidence too), and Insens is built to show the
#   role of inactive neurons, which can lie anywhere.
# - **Deletion and insertion measure faithfulness to one output under one kind of
#   perturbation.** Setting pixels to 0 makes images the network never saw; on MNIST, 0 is
#   the background, so deleting background pixels changes nothing, and the order in which
#   a map ranks background pixels does not count. Pixels are ordered by the *signed* map,
#   which favours maps whose positive part is the evidence for the class (relevance
#   methods); ordering by |map| gives other numbers. Insens has no target class, so its
#   curves measure how well the state's sensitivity happens to line up with one logit.
# - **Randomisation checks dependence on the weights, not quality.** Passing it is
#   necessary for a map that explains the model, not sufficient. And rank correlations
#   between maps that are zero on the whole background and non-negative elsewhere are held
#   up by the background, which ties at the lowest rank in both maps.
#
# The paper compares the methods visually; these measures make parts of that comparison
# repeatable, and each can be gamed by a map built for it. Read them together, with the
# figures.

# %%
wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
print(f"notebook ran in {wall:.0f} s, {cpu:.0f} s of CPU time")
