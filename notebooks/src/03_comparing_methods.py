# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

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
# Methods that give the same maps on this network are found by measurement and shown as one
# entry (with the identities that explain them); every mean comes with its 95% interval,
# and a section says where Insens ranks and against which methods the difference is larger
# than the interval. The last cell says what these numbers do and do not show.

# %%
# %matplotlib inline
import inspect
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import tutorial
from scipy import stats

import slp
from slp import metrics, noise, plotting
from slp.attributions import get_method

start, cpu_start = time.perf_counter(), time.process_time()

# %% [markdown]
# The same small 2CONV network as in notebooks 1 and 2 (one seeded epoch on 12,000 MNIST
# images, `tutorial.mnist_2conv`): its cached checkpoint, or trained here if no earlier
# notebook has run.

# %%
model, params, test_x, test_y, accuracy = tutorial.mnist_2conv()
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

# %% [markdown]
# ## Methods that coincide
#
# Some registered methods are the same rule under two names, or become the same rule
# under a condition that trained networks nearly meet. These identities follow from the
# definitions (README, "Methods that coincide"; each is checked in float64 on random
# networks, next to a case that breaks its condition, in `tests/library/test_method_identities.py`):
#
# - `lrp_alpha_beta` with its defaults (α = 1, β = 0, bias split, stabiliser 1e-6) **is**
#   `lrp_alpha1_beta0`.
# - `lrp_alpha1_beta0` **equals** `lrp_zplus` **when no bias is positive**: α1β0 puts each
#   layer's positive bias part b⁺ into its denominator Σ(a w)⁺ + b⁺, z+ leaves the bias out.
# - `deep_taylor` **equals** `lrp_alpha_beta(stabilizer=0)` **when no bias is negative and
#   the target logit is positive** (iNNvestigate's Deep Taylor puts the whole bias b into
#   that denominator, and starts from max(f_t, 0)).
# - LRP-0 (`lrp_epsilon` with ε = 0) **equals gradient × input**, with or without biases;
#   `lrp_epsilon` at its default ε = 1e-7 differs from it only where some layer output is
#   within about ε of 0.
#
# Which of them coincide *here* is measured, not assumed: for every pair of methods, the
# relative difference $|a - b| / \max(|a|, |b|)$ of their maps of the same image (norms
# over the pixels), largest over the 16 digits in all four conditions. Pairs below 5% are
# drawn and measured as one entry from here on, named after the first of them in the
# registry.

# %%
TOLERANCE = 0.05  # largest relative difference of two methods' maps that counts as the same


def relative_difference(a, b):  # per map, over the 4 x N maps of two methods
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    scale = np.maximum(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
    return np.linalg.norm(a - b, axis=1) / np.where(scale > 0, scale, 1.0)


stacked = {m: np.concatenate([maps[c, m] for c in inputs]) for m in methods}
pairs = {
    (a, b): float(relative_difference(stacked[a], stacked[b]).max())
    for i, a in enumerate(methods)
    for b in methods[i + 1 :]
}
print("pairs of methods whose maps differ by less than 10% (largest relative difference):")
for (a, b), d in sorted(pairs.items(), key=lambda item: item[1]):
    if d < 0.1:
        verdict = f"same entry (below {TOLERANCE:.0%})" if d < TOLERANCE else "kept apart"
        print(f"  {a:18s} {b:18s} {d:.1e}   {verdict}")

# One entry per group of methods linked by differences below the tolerance.
entry_of = {m: m for m in methods}
for (a, b), d in sorted(pairs.items(), key=lambda item: methods.index(item[0][1])):
    if d < TOLERANCE:
        entry_of[b] = entry_of[a]
entries = [m for m in methods if entry_of[m] == m]
aliases = {e: [m for m in methods if entry_of[m] == e and m != e] for e in entries}


def label(e, sep="\n"):  # "=" for an exact alias, "≈" for one within the tolerance
    return e + "".join(f"{sep}{'=' if pairs[e, m] == 0 else '≈'} {m}" for m in aliases[e])


biases = [
    np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    if "bias" in jax.tree_util.keystr(path)
]
positive = sum(int((b > 0).sum()) for b in biases)
negative = sum(int((b < 0).sum()) for b in biases)
apart = min((d, pair) for pair, d in pairs.items() if entry_of[pair[0]] != entry_of[pair[1]])
print(f"closest pair kept apart: {apart[1][0]} and {apart[1][1]}, {apart[0]:.2f}")
print(f"\n{len(entries)} entries: " + "; ".join(label(e, " ") for e in entries))
print(f"biases of the network: {positive} positive, {negative} negative")

# %% [markdown]
# Two groups form, as the identities predict. `lrp_alpha_beta` and `lrp_alpha1_beta0` give
# exactly the same maps (the same rule). `lrp_zplus` differs from them by at most 1.1e-02:
# the network has 94 positive biases, so the condition of the second identity does not hold
# exactly, but the positive biases take only a little relevance. `lrp_epsilon` differs from
# `gradient_x_input` by at most 1.1e-04, the effect of its ε = 1e-7. `deep_taylor` stays
# apart from the α1β0 rule: the network has 92 negative biases, which Deep Taylor puts into
# its denominators and α1β0 leaves out. Every other pair differs by much more than the
# tolerance (the closest by 0.25, printed above), so the grouping does not hang on where the
# tolerance is set. Within each group the means of the measures below differ by at most
# 0.001 (printed under the table). From here on each group is one
# entry, 11 in all, and its curves no longer lie on top of each other.
#
# ## Every method, side by side
#
# Two digits, clean and with bordered noise, one column per entry. Each map is drawn on its
# own symmetric scale (the paper's convention: methods have different units): the colour
# bar reads as the value divided by the largest |value| of its panel.

# %%
shown = [0, 2]  # a 7 and a 1
rows = [(i, c) for i in shown for c in ("clean", "bordered")]
n_cols = len(entries) + 2  # the input, one column per entry, the colour bar
fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.15 * n_cols, 1.15 * len(rows) + 1.1))
for r, (i, c) in enumerate(rows):
    plotting.show_image(axes[r, 0], inputs[c][i], title="input" if r == 0 else None)
    axes[r, 0].set_ylabel(f"{c}\n(digit {labels[i]})", rotation=0, ha="right", fontsize=8)
    for ax, e in zip(axes[r, 1:-1], entries, strict=True):
        m = maps[c, e][i]
        image = plotting.heatmap(ax, m / plotting.symmetric_limit(m), limit=1.0)
        if r == 0:
            ax.set_title(label(e), fontsize=7)
    axes[r, -1].set_axis_off()
bar = fig.colorbar(image, cax=axes[1, -1].inset_axes([0.1, -0.6, 0.15, 2.2]))
bar.set_label("value / largest |value| of its panel", fontsize=8)
fig.subplots_adjust(left=0.07, right=0.99, top=0.8, bottom=0.02, wspace=0.06, hspace=0.06)
plt.show()

to_pixels = jax.vmap(metrics.pixel_map)  # (N, 28, 28, 1) -> (N, 28, 28), channels summed
zero = {
    c: {e: float(np.mean(np.asarray(to_pixels(maps[c, e])) == 0)) for e in entries}
    for c in ("clean", "bordered")
}
print("share of pixels where the map is exactly 0, clean / bordered (mean over 16 digits):")
for e in entries:
    print(f"  {e:22s} {zero['clean'][e]:.3f} / {zero['bordered'][e]:.3f}")

# %% [markdown]
# What the figure shows, in numbers. Gradient × input (= LRP-ε), integrated gradients, the
# LRP rules and Deep Taylor are products with the input, so they are exactly 0 on every
# black pixel: on 0.824 of the pixels of a clean digit and on 0.594 with bordered noise,
# where they light up the noisy pixels around the digit. Insens, the gradient, SmoothGrad,
# guided backprop, deconvnet and bounded Deep Taylor are 0 on at most 0.006 of the pixels:
# their maps cover the background too, clean or noisy. Which of them stays on the digit,
# and how much a map moves under noise, the measures below count.
#
# ## Measuring the maps
#
# All measures below work on pixel maps (`metrics.pixel_map` sums channels; MNIST has one).
# Each is computed per image and shown as the mean over the 16 images with its 95%
# confidence interval (Student's t; undefined values, such as the rank correlation of an
# all-zero map, are left out).
#
# - **Robustness**, per noisy variant: Spearman rank correlation between the map of the
#   clean digit and the map of its noisy version (1: the same ranking of pixels).
# - **On region**: the share of the map's absolute mass on the digit and its 3-pixel outline
#   (`metrics.mass_on_mask` with `noise.clean_mask("bordered", x)`), for the *bordered*
#   input. A map spread evenly over the image scores the region's share of the image area.
# - **Deletion / insertion**: pixels are set to 0 (the MNIST background), the highest
#   values of the signed map first, and the area under the true class's softmax probability
#   is taken (`metrics.deletion_curve`, `metrics.insertion_curve`, `metrics.curve_area`);
#   shown as the difference to a random pixel order on the same image. Deletion: lower is
#   better; insertion: higher is better.

# %%
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
random_del, random_ins, random_curve = (
    np.asarray(a) for a in areas(jnp.asarray(images), random_scores, jnp.asarray(labels))
)

# Per measure and method: the 16 per-image values.
MEASURES = {  # name: True if higher is better
    "rho bordered": True,
    "rho background": True,
    "rho framed": True,
    "on region": True,
    "deletion - random": False,
    "insertion - random": True,
}
per_image, curves = {}, {}
for m in methods:
    clean = to_pixels(maps["clean", m])
    row = {
        f"rho {v}": np.asarray(jax.vmap(metrics.spearman)(clean, to_pixels(maps[v, m])))
        for v in variants
    }
    row["on region"] = np.asarray(
        jax.vmap(metrics.mass_on_mask)(to_pixels(maps["bordered", m]), region)
    )
    deletion, insertion, curve = areas(jnp.asarray(images), clean, jnp.asarray(labels))
    row["deletion - random"] = np.asarray(deletion) - random_del
    row["insertion - random"] = np.asarray(insertion) - random_ins
    per_image[m], curves[m] = row, np.asarray(curve)


def mean_ci(values):
    """Mean of the finite values and the half-width of its 95% t-interval."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


summary = {e: {k: mean_ci(per_image[e][k]) for k in MEASURES} for e in entries}
print(f"mean over the {N} images ± half-width of its 95% interval")
print(f"{'entry':20s}" + "".join(f"{k:>20s}" for k in MEASURES))
for e in entries:
    cells = "".join(f"{mu:12.3f} ± {h:5.3f}" for mu, h in summary[e].values())
    print(f"{e:20s}{cells}")
print(f"{'(uniform / random)':20s}{'':60s}{region.mean():12.3f}{0:20.3f}{0:20.3f}")
spread = max(
    abs(np.nanmean(per_image[m][k]) - np.nanmean(per_image[entry_of[m]][k]))
    for m in methods
    for k in MEASURES
)
print(f"largest difference of a mean between methods of one entry: {spread:.3f}")

# %%
fig, axes = plt.subplots(2, 2, figsize=(14, 9.5))
pos = np.arange(len(entries))
names = [label(e, " ") for e in entries]


def bars(ax, keys, colours):
    width = 0.8 / len(keys)
    for k, (key, colour) in enumerate(zip(keys, colours, strict=True)):
        mu, half = np.array([summary[e][key] for e in entries]).T
        offset = (k - (len(keys) - 1) / 2) * width
        ax.bar(pos + offset, mu, width, yerr=half, capsize=2, color=colour, label=key)
    ax.set_xticks(pos, names, rotation=60, ha="right", fontsize=8)
    for tick, e in zip(ax.get_xticklabels(), entries, strict=True):
        if e == "insens":
            tick.set_color("red")
            tick.set_fontweight("bold")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=8, ncol=len(keys) + 1, loc="lower center", bbox_to_anchor=(0.5, 1.0))


bars(axes[0, 0], [f"rho {v}" for v in variants], ["tab:blue", "tab:orange", "tab:green"])
axes[0, 0].set_ylabel("Spearman, clean vs noisy map")
axes[0, 1].axhline(region.mean(), color="k", ls="--", lw=1, label="uniform map")
bars(axes[0, 1], ["on region"], ["0.5"])
axes[0, 1].set_ylabel("share of |map| on digit + outline (bordered)")
bars(axes[1, 0], ["deletion - random", "insertion - random"], ["tab:purple", "tab:olive"])
axes[1, 0].set_ylabel("area under the curve, minus random order")

# Deletion curves of Insens, of the entries with the lowest and highest deletion area, and
# of the random order, each with the 95% interval of its mean over the 16 images.
by_deletion = sorted(
    (e for e in entries if e != "insens"), key=lambda e: summary[e]["deletion - random"][0]
)
fraction = np.linspace(0, 1, random_curve.shape[1])
shown_curves = {  # name: (colour, legend)
    "insens": ("red", "insens"),
    by_deletion[0]: ("tab:blue", f"{label(by_deletion[0], ' ')} (lowest area)"),
    by_deletion[-1]: ("tab:green", f"{label(by_deletion[-1], ' ')} (highest area)"),
    "random order": ("k", "random order"),
}
for name, (colour, text) in shown_curves.items():
    curve = random_curve if name == "random order" else curves[name]
    mu = curve.mean(axis=0)
    half = stats.t.ppf(0.975, N - 1) * curve.std(axis=0, ddof=1) / np.sqrt(N)
    axes[1, 1].plot(fraction, mu, color=colour, lw=2.5 if name == "insens" else 1.2, label=text)
    axes[1, 1].fill_between(fraction, mu - half, mu + half, color=colour, alpha=0.15, lw=0)
axes[1, 1].set_xlabel("fraction of pixels deleted (highest signed value first)")
axes[1, 1].set_ylabel("probability of the true class")
axes[1, 1].legend(fontsize=8, loc="upper right")
axes[1, 1].set_title("deletion curves, mean of 16 with 95% intervals", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Where Insens ranks
#
# A rank among 11 means of 16 images says little by itself; the intervals above overlap a
# lot. So for each measure, Insens against every other entry on the same images: the mean
# of the per-image difference and its 95% t-interval. Insens is *better* than an entry when
# the interval lies entirely on the better side of 0, *worse* when it lies entirely on the
# other side, and *not distinguishable* otherwise.

# %%
ranks = {}
print(f"{'measure':20s}{'rank':>8s}{'better than':>13s}{'tied with':>11s}{'worse than':>12s}")
for key, higher in MEASURES.items():
    order = sorted(entries, key=lambda e: -summary[e][key][0] if higher else summary[e][key][0])
    better, tied, worse = [], [], []
    for e in entries:
        if e == "insens":
            continue
        mu, half = mean_ci(per_image["insens"][key] - per_image[e][key])
        gain = mu if higher else -mu
        (better if gain - half > 0 else worse if gain + half < 0 else tied).append(e)
    ranks[key] = order.index("insens") + 1
    print(
        f"{key:20s}{ranks[key]:4d} of {len(entries)}{len(better):13d}{len(tied):11d}"
        f"{len(worse):12d}"
    )
    print(f"{'':20s}worse than: {', '.join(worse) or '-'}")

# %% [markdown]
# On these 16 digits Insens ranks 4th of 11 for robustness to bordered noise (0.647), and
# only SmoothGrad and guided backprop are better by more than the interval; under
# background and framed noise it ranks 6th and 9th. The share of its map on the digit and
# outline, 0.574, is 7th of 11 and close to the 0.539 of a uniform map. By deletion and
# insertion it ranks 10th of 11: far better than a random order (-0.523 and 0.252), but
# worse than 7 of the other 10 by more than the interval. So on this network the measured
# part of the paper's claim holds for bordered noise only, where Insens is among the most
# robust maps but not the most robust; and Insens is among the least faithful maps by
# deletion and insertion, which it was not built for (it has no target class).
#
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
randomised = {e: [] for e in entries}
for _, p in cascade:
    for e in entries:
        rho = jax.vmap(metrics.spearman)(
            to_pixels(maps["clean", e]), to_pixels(attribution_maps(e, p, images))
        )
        randomised[e].append(mean_ci(rho))

print(f"{'entry':20s}" + "".join(f"{'+ ' + s:>16s}" for s in steps))
for e in entries:
    print(f"{e:20s}" + "".join(f"{mu:8.3f} ± {half:5.3f}" for mu, half in randomised[e]))

tab20 = plt.get_cmap("tab20")
shades = [i for i in (*range(0, 20, 2), *range(1, 20, 2)) if i not in (6, 7)]  # no reds
others = [e for e in entries if e != "insens"]
colour = {e: tab20(shades[k % len(shades)]) for k, e in enumerate(others)} | {"insens": "red"}
fig, ax = plt.subplots(figsize=(9, 4.2))
for e in entries:
    ys = [1.0] + [mu for mu, _ in randomised[e]]
    width = 2.5 if e == "insens" else 1.0
    ax.plot(range(len(ys)), ys, "o-", color=colour[e], lw=width, ms=3, label=label(e, " "))
ax.set_xticks(range(len(steps) + 1), ["trained"] + [f"+ {s}" for s in steps])
ax.set_xlabel("layers re-initialised, from the output down")
ax.set_ylabel("Spearman with the trained map (mean of 16)")
ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
fig.tight_layout()
plt.show()

# %% [markdown]
# Model randomisation separates the methods clearly. Re-initialising the output layer
# leaves Insens unchanged (1.000 ± 0.000, by its definition); it keeps 0.968 after the
# dense layer and falls to 0.724 and 0.270 when the conv layers are re-initialised: it
# depends on the weights of the layers that hold most of its neurons. The gradient,
# gradient × input, integrated gradients and SmoothGrad pass the check most clearly (0.117
# or less after the output layer alone). Deep Taylor
# fails it here: its map keeps a rank correlation of 0.997 with the trained one after
# every layer is re-initialised, and bounded Deep Taylor 0.878; on this network they show
# mostly the input.
#
# ## What these numbers show, and what they do not
#
# - **They are about one small network and 16 digits.** The network is a reduced 2CONV
#   trained for one epoch, not the paper's; with 16 images most of the differences between
#   methods are within the 95% intervals printed above. For the full-size network and
#   hundreds of images, run `experiments/mnist_metrics.py`.
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
