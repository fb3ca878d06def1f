"""The printed result numbers of the README and the docs site, each traced to its place in a
committed results file.

A table of rows, read by ``tests/docs/test_readme_numbers.py``. Each row (`N`) is one
number, or one line or table row of numbers, of the pages and sections `CHECKED`:

* ``section``: the page it is printed on (a file of the repository: ``README.md`` or a page
  of ``docs/``) and the heading it is printed under (a prefix of it): a ``##`` or ``###``
  section of the README, the ``#`` title of a docs page (a docs page is one section);
* ``pattern``: a regular expression whose group 1 holds the printed number(s), in order;
* ``source``: the results file (``results/<source>``) that section cites for them;
* per number a `Value`: its place in that file (a "/"-path of keys and list positions, or
  a small named function of the loaded file, for ranks and "best" claims), and the
  rounding it is printed with (a Python format spec, after an optional scale: 2**-20 for
  MiB, 2**-30 for GiB, 1e-3 for "k").

Ranks and "best" claims are recomputed from the per-method values (1 + the number of
methods strictly better, as the results' markdown files rank them). `ALLOWED` are the
numbers of these sections that are not results (section, figure and equation numbers, the
sizes of an architecture, unit definitions, the machine's 2 CPU cores).

A new number in these sections needs a row here; a number that moves to another page
takes its rows with it (change its `Section`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

RESULTS = Path(__file__).resolve().parents[2] / "results"


class Section(NamedTuple):
    """Where numbers are printed: a file of the repository and a heading on it (a prefix)."""

    page: str
    heading: str


README = "README.md"
READING = Section("docs/guide/reading-an-insens-map.md", "Reading an Insens map")
HEADLINE = Section(README, "Headline results")
RESULTS_INDEX = Section("docs/results/index.md", "Results")
MN = Section("docs/results/mnist-noise.md", "MNIST with noise")
MM = Section("docs/results/mnist-metrics.md", "Measuring the claims")
ENC = Section("docs/results/encodings.md", "Pixel encodings")
CIF = Section("docs/results/cifar-10.md", "CIFAR")
PONG = Section("docs/results/pong.md", "Pong")
BASE = Section("docs/results/baselines.md", "Baselines and speed")
SPEED = Section("docs/results/insens-speed.md", "Insens speed")
DATASET = Section("docs/results/datasets.md", "Whole data sets on several devices")
QSPEED = Section("docs/results/metrics-speed.md", "Metrics speed")
LIM = Section("docs/limitations.md", "Limitations")

CHECKED = (
    HEADLINE,
    READING,
    RESULTS_INDEX,
    MN,
    MM,
    ENC,
    CIF,
    PONG,
    BASE,
    QSPEED,
    SPEED,
    DATASET,
    LIM,
)
"""Sections whose every number must be traced: a README section (with its subsections) or
a whole docs page."""

ALLOWED = (
    r"(?:the paper's )?sections? \d+(?:\.\d+)*(?: and \d+)?",  # the paper's sections
    r"Figures? \d+(?: left| right)?",  # the paper's figure numbers
    r"1 MiB = 2\^20 bytes, 1 GiB = 2\^30 bytes",  # unit definitions
    r"\b2\s+CPU\s+cores|\b2 cores",  # the machine of every CPU run (machine.cpus in each file)
    r"\b1-minute load average",  # the load average's averaging window
    r"CIFAR-10",  # a data set's name
    r"GPL-2\.0",  # a licence's name
    r"3 conv \+ dense 512",  # architecture sizes
    r"conv 8×8/4, 4×4/2, 3×3/1, dense 512, 84×84×4",
    r"conv 16, residual blocks 16, 32/2, 64/2 with\s+1×1 strided shortcuts, global average"
    r"\s+pooling, dense 10; 32×32×3",
    r"an 8×8 kernel with stride 4",
    r"\b28×28\b",  # the MNIST input size
    r"\b95%\s+(?:t-)?interval",  # a confidence level
    r"target of 20,000 img/s at batch ≥ 1024",  # a goal, not a measurement
    r"arXiv:1909\.11275v1",  # the paper's identifier and version
    r"at least 1× Quantus on every\s+metric, and at least 5×|The [15]× target",  # speed goals
    r"more\s+than 1\.2 times slower|\b1\.2\s+target",  # the planner's goal (and its fit's rule)
)


@functools.cache
def load(name: str) -> Any:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def at(doc: Any, path: str) -> Any:
    """``doc`` at a "/"-separated path of keys (list positions as integers)."""
    for key in path.split("/"):
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    return doc


# --- the table -------------------------------------------------------------------------------


class Value(NamedTuple):
    """One printed number: where it is in the file, how it is rounded.

    ``get``: a "/"-path or a function of the loaded file; it may return a list of
    accepted values, or a string that explains why the claim does not hold.
    ``fmt``: format spec of the printed number after multiplying by ``scale``; ``"s"``
    compares text.
    """

    get: str | Callable[[Any], Any]
    fmt: str = ".3f"
    scale: float = 1.0


class Numbers(NamedTuple):
    """One row: the number(s) that ``pattern``'s group 1 matches in ``section``, from
    ``results/<source>``, one `Value` each, in the order printed."""

    section: Section
    pattern: str
    source: str
    values: tuple[Value, ...]


def N(section: Section, pattern: str, source: str, *values) -> Numbers:
    return Numbers(section, pattern, source, tuple(Value(*v) for v in values))


MiB, GiB = 2.0**-20, 2.0**-30
INT, F1, F2, F3, F4, E1 = "d", ".1f", ".2f", ".3f", ".4f", ".1e"
PCT = 100.0


def n_methods(d):
    return len(d["config"]["methods"])


def summaries(d, section: str, keys: str) -> dict[str, dict]:
    """Per-method summaries (mean, std, n, n_undefined) of a measure; no random baseline."""
    return {m: at(v, keys) for m, v in d[section].items() if m != "random"}


def rank(scores: dict[str, dict], name: str, higher: bool) -> int:
    defined = {m: s["mean"] for m, s in scores.items() if s["mean"] is not None}
    mine = defined[name]
    return 1 + sum((v > mine) if higher else (v < mine) for v in defined.values())


def rank_of(section: str, keys: str, higher: bool, name: str = "insens"):
    return lambda d: rank(summaries(d, section, keys), name, higher)


def placed(section: str, keys: str, higher: bool, name: str, place: int):
    """The mean of ``name``, if it ranks ``place`` on that measure."""

    def get(d):
        scores = summaries(d, section, keys)
        r = rank(scores, name, higher)
        return scores[name]["mean"] if r == place else f"{name} ranks {r}, not {place}"

    return get


def rank_span(section: str, keys: tuple[str, ...], higher: tuple[bool, ...], pick):
    return lambda d: pick(
        rank(summaries(d, section, k), "insens", h) for k, h in zip(keys, higher, strict=True)
    )


def each_batch(batches: tuple[int, ...], path: str, *fmt) -> list[tuple]:
    """One value per batch size: ``path`` with ``{b}`` standing for the batch size."""
    return [(path.format(b=b), *fmt) for b in batches]


def per_image(d, path):
    return d["cases"][path]["xla_temp_bytes_per_image"]


def inactive(d, layer: int | None = None):
    """Inactive hidden neurons of an average clean test digit (all layers or one)."""
    layers = d["active_fraction"]["layers"]
    counts = [l["neurons"] * (1 - l["mean"]) for l in layers]
    return sum(counts) if layer is None else counts[layer]


def layer_term(d, *, condition: str, layer: int) -> float:
    """A layer's |I_l| x mean |map_l| as a share of the layers' sum (the per-layer Insens)."""
    rows = d["insens_layers"]["conditions"][condition]["layers"]
    terms = [r["inactive"]["mean"] * r["mean_abs"]["mean"] for r in rows]
    return terms[layer] / sum(terms)


def layer_share(condition: str, layer: int | None, place: int | None = None):
    """Share of |map| on the digit and outline of one layer's Insens map (None: the total).

    With ``place``, only if that layer ranks there among the layers (1: the largest share).
    """

    def get(d):
        rows = d["insens_layers"]["conditions"][condition]
        if layer is None:
            return rows["total"]["share_on_digit_outline"]["mean"]
        shares = [r["share_on_digit_outline"]["mean"] for r in rows["layers"]]
        mine = shares[layer]
        r = 1 + sum(v > mine for v in shares)
        return mine if place in (None, r) else f"layer {layer} ranks {r}, not {place}"

    return get


def clean_layer_shares(d):
    """The layers' shares on the digit and outline for clean digits."""
    rows = d["insens_layers"]["conditions"]["clean"]["layers"]
    return [r["share_on_digit_outline"]["mean"] for r in rows]


def below_uniform(condition: str, layer: int):
    """A layer's share, if it is below the share of a uniform map."""

    def get(d):
        share = layer_share(condition, layer)(d)
        uniform = d["insens_layers"]["region_fraction"]
        return share if share < uniform else f"{share} is not below the uniform {uniform}"

    return get


def conv_inactive_fraction(condition: str):
    """Fraction of the inactive hidden neurons that are in the two conv layers (2CONV)."""

    def get(d):
        rows = d["insens_layers"]["conditions"][condition]
        names = [r["layer"] for r in rows["layers"]]
        if names != ["conv1", "conv2", "dense"]:
            return f"layers {names}"
        conv = sum(r["inactive"]["mean"] for r in rows["layers"][:2])
        return conv / rows["total"]["inactive"]["mean"]

    return get


def accuracy(variant: str):
    def get(d):
        sigma = d["config"]["sigma"]
        (acc,) = [
            v["accuracy"] for v in d["variants"] if v["variant"] == variant and v["sigma"] == sigma
        ]
        return acc

    return get


def undefined_framed(d):
    """Images with an undefined framed-noise Spearman, if both Deep Taylor variants agree."""
    counts = {
        d[ROB][m]["framed"]["spearman"]["n_undefined"]
        for m in ("deep_taylor", "deep_taylor_bounded")
    }
    return counts.pop() if len(counts) == 1 else f"the Deep Taylor variants differ: {counts}"


# The methods whose map is the input times something (zero where the input is zero).
INPUT_MULTIPLES = (
    "gradient_x_input integrated_gradients deep_taylor "
    "lrp_epsilon lrp_alpha_beta lrp_alpha1_beta0 lrp_alpha2_beta1 lrp_zplus"
).split()

ROB = "robustness"
FAITH = "faithfulness"
RAND = "randomization"
FAITH4 = (
    "signed/deletion/auc_probability",
    "signed/insertion/auc_probability",
    "abs/deletion/auc_probability",
    "abs/insertion/auc_probability",
)
LOWER_HIGHER = (False, True, False, True)

NOISE, METRICS, SEEDS = "mnist_noise.json", "mnist_metrics.json", "mnist_seeds.json"
CPU, QN, QNP = (
    "bench_insens_cpu.json",
    "bench_insens_qnetwork_cpu.json",
    "bench_insens_qnetwork_probes_cpu.json",
)
RN, RNP, GPU = (
    "bench_insens_resnet8_cpu.json",
    "bench_insens_resnet8_probes_cpu.json",
    "bench_insens_h100.json",
)
ATTR = "bench_attributions.json"
QBENCH = "bench_metrics.json"
QSTEP64 = "bench_metrics_step64.json"
QEIGEN = "bench_metrics_eigen.json"


EXPLAIN_AGAIN = (
    "MaxSensitivity",
    "AvgSensitivity",
    "LocalLipschitzEstimate",
    "RelativeInputStability",
    "FaithfulnessCorrelation",
    "RandomLogit",
    "MPRT",
    "SmoothMPRT",
)
"""The metrics whose speed target is 5x Quantus (the others': 1x)."""
LATTICE = "pong_lattice.json"
ZOO = "bench_insens_zoo_cpu.json"
ZOO_ROUTES = "bench_insens_zoo_routes_cpu.json"
ZOO_TINY = "bench_insens_zoo_routes_tiny_cpu.json"
"""The zoo's networks at their small size (``--tiny``), timed with the fitted table."""
ZOO_TINY_BEFORE = "bench_insens_zoo_routes_tiny_previous_fit_cpu.json"
"""The same, timed with the table fitted to the full-size networks alone."""
ZOO_B64 = "bench_insens_zoo_routes_tiny_b64_cpu.json"
"""The zoo's small networks at 64 inputs per call, timed with the fitted table."""
ZOO_B64_BEFORE = "bench_insens_zoo_routes_tiny_b64_previous_fit_cpu.json"
"""The same, timed with the table fitted to 1 and 8 inputs per call alone."""
ZOO_TINY_RERUN = "bench_insens_zoo_routes_tiny_rerun_cpu.json"
"""A second run of the small networks with the fitted table."""
ZOO_TINY_CF082BD = "bench_insens_zoo_routes_tiny_cf082bd_cpu.json"
"""The small networks at 1 and 8 inputs per call, timed with the table of commit cf082bd."""
ZOO_ROUTES_CF082BD = "bench_insens_zoo_routes_cf082bd_cpu.json"
"""The full-size networks at 1 and 8 inputs per call, timed with the table of commit cf082bd."""
ZOO_B64_CF082BD = "bench_insens_zoo_routes_tiny_b64_cf082bd_cpu.json"
"""The small networks at 64 inputs per call, timed with the table of commit cf082bd (fitted
with them, without the full-size networks at 64)."""
ZOO_FULL64 = "bench_insens_zoo_routes_b64_cpu.json"
"""Eight of the zoo's full-size networks at 64 inputs per call, timed with the fitted table."""
ZOO_FULL64_REST = "bench_insens_zoo_routes_b64_rest_cpu.json"
"""The other seven full-size networks at 64 inputs per call (not in the fit at that size)."""
ZOO_FULL64_CF082BD = "bench_insens_zoo_routes_b64_cf082bd_cpu.json"
"""The same, timed with the table of commit cf082bd."""


def zoo_slow_choices(d, slack: float = 1.2) -> int:
    """How many network and batch cases chose a route over ``slack`` times the fastest."""
    return sum(1 for r in d["route_check"]["rows"] if (r["chosen_vs_fastest"] or 0) > slack)


def zoo_chosen_vs_fastest(net: str, batch: int):
    """The chosen route's measured time over the fastest's, on zoo network ``net`` at ``batch``."""
    return lambda d: next(
        r["chosen_vs_fastest"]
        for r in d["route_check"]["rows"]
        if r["network"] == net and r["batch"] == batch
    )


def zoo_worst_choice_is(net: str, batch: int):
    """The worst chosen/fastest of a zoo run, read from ``net`` at ``batch`` (None unless that
    case is the worst, so a row naming it fails when another network is worse)."""

    def get(d):
        worst = d["route_check"]["worst_chosen_vs_fastest"]
        mine = zoo_chosen_vs_fastest(net, batch)(d)
        return mine if mine == worst else None

    return get


def zoo_predictions_off(d, *, chosen: bool = False, factor: float = 3.0) -> int:
    """How many timed routes' predictions were off by more than ``factor`` (``chosen``: of
    the chosen routes only)."""
    return sum(
        1
        for r in d["route_check"]["rows"]
        for route, ratio in r["predicted_vs_measured"].items()
        if max(ratio, 1 / ratio) > factor and (not chosen or route == r["chosen"])
    )


def zoo_changed_choices(d) -> list[tuple[str, int]]:
    """The (network, batch) cases of a zoo run where the current cost table, given the work
    the run recorded, chooses another route than the run's table chose."""
    from slp._src import costs

    return [
        (name, int(batch))
        for name, net in d["networks"].items()
        for batch, rec in net["routes"].items()
        if costs.choose({r: v["work"] for r, v in rec["routes"].items()}, batch=int(batch))
        != rec["chosen"]
    ]


def zoo_all_same_choices(run: str) -> int | None:
    """The number of network and batch cases of zoo run ``run`` when the current cost table
    chooses the route the run's table chose in every one (None when it differs in any)."""
    d = load(run)
    total = sum(len(net["routes"]) for net in d["networks"].values())
    return None if zoo_changed_choices(d) else total


def zoo_route_networks(d) -> int:
    """The number of zoo networks whose routes were timed."""
    return len({row["network"] for row in d["route_check"]["rows"]})


VERSIONS = "bench_versions.json"
"""`experiments/bench_versions.py`: the zoo in the version before the internals moved into
``slp/_src`` and in this one."""


def versions_range(key: str, pick, *, same_route: bool = False):
    """``pick`` (min or max) of ``key`` over the rows of a bench_versions file (``same_route``:
    the rows where both versions took one route)."""
    return lambda d: pick(
        r[key]
        for r in d["results"]
        if not same_route or r["routes"]["before"] == r["routes"]["after"]
    )


def versions_span(pattern: str, key: str, fmt: str, *, same_route: bool = False) -> Numbers:
    """A row printing the lowest and highest ``key`` of bench_versions as "low–high"."""
    low, high = (versions_range(key, pick, same_route=same_route) for pick in (min, max))
    return N(SPEED, pattern, VERSIONS, (low, fmt), (high, fmt))


def versions_count(d, which: str) -> int:
    """Rows of a bench_versions file: all, with the same route, or over the tolerance."""
    rows = d["results"]
    if which == "same route":
        rows = [r for r in rows if r["routes"]["before"] == r["routes"]["after"]]
    elif which == "slower":
        rows = [r for r in rows if r["call_ratio"] > d["config"]["tolerance"]]
    return len(rows)


def versions_networks(d) -> int:
    """The number of networks a bench_versions file timed."""
    return len({r["network"] for r in d["results"]})


def versions_batches(d) -> list[int]:
    """The batch sizes a bench_versions file timed."""
    return sorted({r["batch"] for r in d["results"]})


def two_batches(batches):
    """The values of a row printing "B1 and B2": the first two of ``batches(d)``."""
    return ((lambda d: batches(d)[0], INT), (lambda d: batches(d)[1], INT))


MINUTES = (lambda d: d["wall_s"] / 60, F1)
"""The value of a row printing a benchmark's wall time in minutes."""


def zoo_route_batches(d) -> list[int]:
    """The batch sizes at which the zoo's routes were timed."""
    return sorted({row["batch"] for row in d["route_check"]["rows"]})


TWO_CONV_COPIES = ("2conv-nnx", "2conv-equinox", "2conv-haiku", "2conv-jnp", "2conv-jnp-deadcode")
"""The zoo's 2CONV written in other ways than flax.linen: the same network."""


def zoo_ms(net: str, batch: int, route: str, key: str = "median_s"):
    """Milliseconds of ``route`` on zoo network ``net`` at ``batch`` inputs: measured
    (``key="median_s"``) or predicted (``"predicted_s"``)."""
    return lambda d: 1e3 * d["networks"][net]["routes"][str(batch)]["routes"][route][key]


def zoo_ms_pair(net: str, batch: int, first: str, second: str, fmt: str) -> tuple:
    """The measured milliseconds of two routes on ``net`` at ``batch``, as two values of a row
    printing "<first> ... against <second>"."""
    return (zoo_ms(net, batch, first), fmt), (zoo_ms(net, batch, second), fmt)


def zoo_first_batch(d) -> int:
    """The (first) batch size at which a zoo run timed its routes."""
    return zoo_route_batches(d)[0]


def zoo_copies_ms(route: str, batch: int, pick):
    """``pick`` (min or max) of ``route``'s measured ms over the 2CONV copies (timed ones)."""

    def get(d):
        runs = [d["networks"][n]["routes"][str(batch)]["routes"][route] for n in TWO_CONV_COPIES]
        return pick(1e3 * r["median_s"] for r in runs if "median_s" in r)

    return get


def zoo_copies_worst_choice(batch: int):
    """The worst chosen/fastest over the 2CONV copies at ``batch``."""

    def get(d):
        rows = d["route_check"]["rows"]
        return max(
            r["chosen_vs_fastest"]
            for r in rows
            if r["network"] in TWO_CONV_COPIES and r["batch"] == batch
        )

    return get


def zoo_blind_choice(d) -> float:
    """The worst, over the zoo, of the best ratio a batch-blind route choice could reach."""
    return max(row["best_possible"] for row in d["route_check"]["rows"])


BENCH_DATASET = "bench_dataset_cpu.json"
DATASET_CONFIGS = ("devices=1", "devices=2", "devices=4", "devices=1, out", "devices=4, out")


def dataset_result(method: str, config: str, key: str):
    """A value of one row of bench_dataset's results (method and configuration)."""

    def get(d):
        (row,) = [r for r in d["results"] if r["method"] == method and r["config"] == config]
        return row[key]

    return get


def dataset_row(method: str) -> Numbers:
    """A row of the whole-data-set table: the plain loop's img/s, then img/s and ratio."""
    values = [(dataset_result(method, "plain", "images_per_second"), F1)]
    for config in DATASET_CONFIGS:
        values += [
            (dataset_result(method, config, "images_per_second"), F1),
            (dataset_result(method, config, "relative_to_plain"), F2),
        ]
    return N(DATASET, rf"^(\| {method} \|.*)$", BENCH_DATASET, *values)


def seed_range(d, variant: str) -> tuple[float, float]:
    """The lowest and highest accuracy on a noise variant over mnist_seeds.json's seeds."""
    n = d["numbers"][f"{variant}_accuracy"]
    return n["min"], n["max"]


def mean_std(path: str, *fmt) -> list[tuple]:
    """A summary's mean and standard deviation ("mean ± std"), printed alike."""
    return [(f"{path}/mean", *fmt), (f"{path}/std", *fmt)]


def return_mean_std(policy: str) -> list[tuple]:
    """A Pong policy's mean return ± std in pong_training.json's evaluation."""
    return [(f"evaluation/{policy}/mean_return", F1), (f"evaluation/{policy}/std_return", F1)]


LOAD_AT_START_AND_END = (("machine/load_at_start/0", F2), ("machine/load_at_end/0", F2))
"""The machine's 1-minute load average at the start and at the end of a benchmark."""


def split_operand_speeds(d):
    """img/s of the first H100 run's split-operand precisions at batches 1024 and 8192."""
    return [
        d["run1"]["cases"][f"insens:{p}@{b}"]["images_per_s"]
        for p in ("TF32_TF32_F32_X3", "BF16_BF16_F32_X6")
        for b in (1024, 8192)
    ]


def zoo_speedups(d, pick):
    return pick(r["speedup_vs_naive"] for n, r in d["networks"].items() if n.startswith("2conv"))


def attribution_row(label: str, method: str, torch: str) -> Numbers:
    """A row of the baseline-speed table: this library's img/s, the torch method's, ratio.

    Speeds of 100 img/s and more are printed as whole numbers, slower ones to 0.1 img/s.
    """

    def speed(group, name):
        path = f"{group}/{name}/images_per_s"
        return (path, ",.0f" if at(load(ATTR), path) >= 100 else F1)

    return N(
        BASE,
        rf"^(\| {re.escape(label)} \|.*)$",
        ATTR,
        *(
            [("config/ig_steps", INT)]
            if method == "integrated_gradients"
            else [("config/smoothgrad_samples", INT)]
            if method == "smoothgrad"
            else []
        ),
        speed("library", method),
        speed("torch", torch),
        (f"ratios/{method}", F2),
    )


def seconds(path: str) -> tuple:
    """A time in seconds: three significant digits, whole seconds with separators from 1000."""
    return (path, ",.0f" if at(load(QBENCH), path) >= 1000 else ".3g")


def target_claim(name: str, met: bool):
    """The speed target of metric ``name`` (5 or 1), if the README's "met"/"not met" holds."""

    def get(d):
        target = 5 if name in EXPLAIN_AGAIN else 1
        ratio = d["metrics"][name]["ratio"]
        if (ratio >= target) != met:
            return f"{name}: ratio {ratio:.2f} against {target}x, printed as met={met}"
        return target

    return get


def lowest_ratio(name: str):
    """The lowest ratio of a metrics benchmark, if it is metric ``name``'s and the run had
    XLA's Eigen convolutions."""

    def get(d):
        lowest = min(d["metrics"], key=lambda k: d["metrics"][k]["ratio"])
        eigen = d["machine"]["xla_eigen_convolutions"]
        if lowest != name or not eigen:
            return f"lowest ratio: {lowest}, Eigen convolutions: {eigen}"
        return d["metrics"][name]["ratio"]

    return get


def metric_speed_row(name: str, *, met: bool = True) -> Numbers:
    """A row of the metrics' speed table: slp s, Quantus s (and the images it was timed on
    where scaled), the ratio, the target and whether it is met."""
    path = f"metrics/{name}"
    scaled = at(load(QBENCH), f"{path}/quantus/scaled")
    return N(
        QSPEED,
        rf"^(\| {name} \|.*)$",
        QBENCH,
        seconds(f"{path}/slp/seconds"),
        seconds(f"{path}/quantus/seconds"),
        *([(f"{path}/quantus/images", INT)] if scaled else []),
        (f"{path}/ratio", F2),
        (target_claim(name, met), INT),
    )


def zoo_row(net: str, insens_speed: str, naive_speed: str, naive_temp: str) -> Numbers:
    """A row of the zoo table: compile time, img/s of both routes, the naive route's images,
    the speed-up, MiB of XLA temporaries per image of both routes.

    ``insens_speed``, ``naive_speed``, ``naive_temp``: the formats that vary by network.
    """
    path = f"networks/{net}"
    return N(
        SPEED,
        rf"^(\| `{net}` \|.*)$",
        ZOO,
        (f"{path}/insens/compile_s", F1),
        (f"{path}/insens/images_per_s", insens_speed),
        (f"{path}/naive/images_per_s", naive_speed),
        (f"{path}/naive/images", INT),
        (f"{path}/speedup_vs_naive", F1),
        (f"{path}/insens/xla_temp_bytes_per_image", F2, MiB),
        (f"{path}/naive/xla_temp_bytes_per_image", naive_temp, MiB),
    )


# --- "Paper vs this reproduction": the claim table ---------------------------------------------

PVR = RESULTS_INDEX  # its "Paper vs this reproduction" section
ENC_JSON = "encodings_fashion_mnist.json"


def image_interval(path: str, bound: int):
    """Low (0) or high (1) end of the 95% t-interval of a summary's mean over its images."""

    def get(d):
        from scipy import stats

        s = at(d, path)
        half = float(stats.t.ppf(0.975, s["n"] - 1)) * s["sem"]
        return s["mean"] + (half if bound else -half)

    return get


def image_mean_ci(path: str, fmt: str = F3) -> list[tuple]:
    """``mean (low–high)`` of a summary: its mean and 95% t-interval over images."""
    return [(f"{path}/mean", fmt), (image_interval(path, 0), fmt), (image_interval(path, 1), fmt)]


def seed_mean_ci(name: str, fmt: str = F3) -> list[tuple]:
    """``mean (low–high)`` of a mnist_seeds.json number: mean and 95% t-interval over seeds."""
    return [(f"numbers/{name}/{k}", fmt) for k in ("mean", "ci95/0", "ci95/1")]


def paper_inside_seed_interval(variant: str):
    """The paper's accuracy on ``variant``, if it lies in the seeds' 95% interval."""

    def get(d):
        low, high = load(SEEDS)["numbers"][f"{variant}_accuracy"]["ci95"]
        paper = d["paper"][variant]
        return paper if low <= paper <= high else f"{paper} is outside ({low}, {high})"

    return get


def claim(start: str, column: int) -> str:
    """The pattern of a claim-table row's ``column`` (1: paper, 2: measured, 3: verdict)."""
    return rf"^\| {re.escape(start)}[^|]*" + r"\|[^|]*" * (column - 1) + r"\| ([^|]*?) \|"


SEED_N = ("numbers/clean_accuracy/n", INT)
ROB_PATH = "robustness/{m}/{c}/{k}"


# --- "Every method on several networks": results/mnist_evaluation.json -------------------------

EVAL = "mnist_evaluation.json"
CEVAL = "cifar10_evaluation.json"  # the same evaluation on CIFAR-10
EVAL_SECTION = MM  # its "Every method on several networks" section
SC, SCN = "metrics/StateChange-baseline", "metrics/StateChange-noise"
EVAL_SIZE = ((lambda d: len(d["seeds"]), INT), ("config/num_images", INT))


def interval(path: str, fmt: str = F3) -> list[tuple]:
    """``mean (low–high)`` of an interval entry ``{"mean", "ci95": [low, high]}``."""
    return [(f"{path}/mean", fmt), (f"{path}/ci95/0", fmt), (f"{path}/ci95/1", fmt)]


def only_member(metric: str, name: str):
    """``name``'s mean on ``metric``, if it is the whole top group."""

    def get(d):
        members = d["metrics"][metric]["top_group"]["members"]
        mean = d["metrics"][metric]["methods"][name]["mean"]
        return mean if members == [name] else f"the top group is {members}"

    return get


def in_top_group(metric: str, name: str):
    """``name``'s mean on ``metric``, if it is in the top group."""

    def get(d):
        members = d["metrics"][metric]["top_group"]["members"]
        mean = d["metrics"][metric]["methods"][name]["mean"]
        return mean if name in members else f"{name} is not in the top group {members}"

    return get


def best_of(metric: str, name: str):
    """``name``'s mean on ``metric``, if it is the best method (the top group's first)."""

    def get(d):
        top = d["metrics"][metric]["top_group"]
        mean = d["metrics"][metric]["methods"][name]["mean"]
        return mean if top["best"] == name else f"the best is {top['best']}"

    return get


def not_in_top_group(metric: str, name: str):
    """``name``'s mean on ``metric``, if it is not in the top group."""

    def get(d):
        members = d["metrics"][metric]["top_group"]["members"]
        mean = d["metrics"][metric]["methods"][name]["mean"]
        return mean if name not in members else f"{name} is in the top group {members}"

    return get


def method_ci(metric: str, name: str, check: Callable) -> list[tuple]:
    """``mean (low–high)`` of method ``name`` on ``metric``, its mean read through ``check``
    (`in_top_group`, `not_in_top_group`, `only_member` or `best_of`: the printed standing)."""
    return [(check(metric, name), F3), *interval(f"metrics/{metric}/methods/{name}")[1:]]


def only_member_across_sigmas(variant: str, name: str, sigma: float):
    """``name``'s mean at ``sigma``, if it alone is the top group at every sigma of the sweep
    of noise ``variant``."""

    def get(d):
        tops = {
            s: d["metrics"][f"Robustness-{variant}-{s:g}"]["top_group"]["members"]
            for s in d["sweep"]["sigmas"]
        }
        if any(m != [name] for m in tops.values()):
            return f"top groups {tops}"
        return d["metrics"][f"Robustness-{variant}-{sigma:g}"]["methods"][name]["mean"]

    return get


def sweep_top_group_count(name: str):
    """In how many (variant, sigma) robustness tests of the sweep ``name`` is in the top group."""

    def get(d):
        sweep = d["sweep"]
        keys = [f"Robustness-{v}-{s:g}" for v in sweep["variants"] for s in sweep["sigmas"]]
        return sum(name in d["metrics"][k]["top_group"]["members"] for k in keys)

    return get


def identity(pair: str, key: str):
    return f"identities/{pair}/{key}"


NUMBERS: tuple[Numbers, ...] = (
    # --- Paper vs this reproduction ------------------------------------------------------------
    N(PVR, r"over (\d+) training seeds are t-intervals", SEEDS, SEED_N),
    N(PVR, claim("2CONV's test accuracy", 1), NOISE, ("paper/clean_accuracy_value", F2)),
    N(PVR, claim("2CONV's test accuracy", 2), SEEDS, *seed_mean_ci("clean_accuracy", F4), SEED_N),
    *(
        N(PVR, claim(f"accuracy on noisy {v}", 1), NOISE, (f"paper/{v}", F2))
        for v in ("bordered", "background", "framed")
    ),
    N(
        PVR,
        claim("accuracy on noisy bordered", 2),
        SEEDS,
        *seed_mean_ci("bordered_accuracy"),
        ("config/sigma", "g"),
        SEED_N,
    ),
    *(
        N(PVR, claim(f"accuracy on noisy {v}", 2), SEEDS, *seed_mean_ci(f"{v}_accuracy"), SEED_N)
        for v in ("background", "framed")
    ),
    N(
        PVR,
        claim("accuracy on noisy background", 3),
        NOISE,
        (paper_inside_seed_interval("background"), F2),
    ),
    N(PVR, claim("the share of active hidden", 1), NOISE, ("paper/active_fraction", F2)),
    N(PVR, claim("the share of active hidden", 2), SEEDS, *seed_mean_ci("active_fraction"), SEED_N),
    *(
        N(
            PVR,
            claim(start, 2),
            EVAL,
            *method_ci(f"Robustness-{variant}-2", "insens", not_in_top_group),
            *(x for m in leaders for x in method_ci(f"Robustness-{variant}-2", m, check)),
            ("config/sigmas/2", "g"),
            (lambda d: len(d["seeds"]), INT),
            (f"metrics/Robustness-{variant}-2/top_group/n_images", INT),
        )
        for start, variant, leaders, check in (
            (
                "Insens is more robust in the presence",
                "bordered",
                ("smoothgrad", "guided_backprop"),
                in_top_group,
            ),
            ("same, background noise", "background", ("smoothgrad",), only_member),
            ("same, framed noise", "framed", ("deep_taylor_bounded",), only_member),
        )
    ),  # fmt: skip
    N(
        PVR,
        claim("same, over the σ sweep", 2),
        EVAL,
        (sweep_top_group_count("insens"), INT),
        (lambda d: len(d["sweep"]["variants"]) * len(d["sweep"]["sigmas"]), INT),
        *((f"config/sigmas/{i}", "g") for i in range(4)),
        (lambda d: len(d["seeds"]), INT),
        ("config/sweep_images", INT),
        ("config/draws", INT),
    ),
    N(
        PVR,
        claim("same, CIFAR-10 (Gaussian", 2),
        CEVAL,
        *method_ci("Robustness-gaussian-0.1", "insens", not_in_top_group),
        (only_member_across_sigmas("gaussian", "deep_taylor_bounded", 0.1), F3),
        *interval("metrics/Robustness-gaussian-0.1/methods/deep_taylor_bounded")[1:],
        ("config/sigmas/1", "g"),
        (lambda d: len(d["seeds"]), INT),
        ("metrics/Robustness-gaussian-0.1/top_group/n_images", INT),
    ),
    N(
        PVR,
        claim("same, CIFAR-10 (top pixels", 2),
        CEVAL,
        *method_ci("StateChange-baseline", "insens", only_member),
        *interval("metrics/StateChange-baseline/controls/random"),
        (lambda d: len(d["seeds"]), INT),
        ("config/num_images", INT),
    ),
    N(
        PVR,
        claim("Insens still shows the digit", 2),
        METRICS,
        *image_mean_ci(ROB_PATH.format(m="insens", c="bordered", k="on_digit")),
        ("region_fraction", F3),
        *image_mean_ci(ROB_PATH.format(m="guided_backprop", c="bordered", k="on_digit")),
    ),
    N(
        PVR,
        claim("Insens maps of the", 2),
        ENC_JSON,
        *image_mean_ci("reversal/insens/mean vs neg_mean/pearson"),
        ("reversal/insens/mean vs neg_mean/pearson/n", INT),
    ),
    N(
        PVR,
        claim("Insens maps of the", 3),
        ENC_JSON,
        ("reversal/insens/mean vs its exact mirror/pearson/mean", ".0f"),
    ),
    N(
        PVR,
        claim("Insens is more complete", 2),
        EVAL,
        (not_in_top_group("StateChange-baseline", "insens"), F3),
        *interval(f"{SC}/methods/insens")[1:],
        (only_member("StateChange-baseline", "deep_taylor"), F3),
        *interval(f"{SC}/methods/deep_taylor")[1:],
        *interval(f"{SC}/controls/random"),
        (lambda d: len(d["seeds"]), INT),
        ("config/num_images", INT),
    ),
    # --- Every method on several networks ------------------------------------------------------
    N(EVAL_SECTION, r"committed run: (\d+) seeds", EVAL, (lambda d: len(d["seeds"]), INT)),
    N(
        EVAL_SECTION,
        r"σ on the first (\d+ digits \(\d+) noise",
        EVAL,
        ("config/sweep_images", INT),
        ("config/draws", INT),
    ),
    N(
        EVAL_SECTION,
        r"MPRT\) on the first (\d+, SmoothMPRT on the first \d+)\.",
        EVAL,
        ("config/explain_images", INT),
        ("metrics/SmoothMPRT/top_group/n_images", INT),
    ),
    N(EVAL_SECTION, r"bordered noise at σ (\d+) it", EVAL, ("config/sigmas/2", "g")),
    N(
        EVAL_SECTION,
        r"it scores (0\.\d+ \(.*?\)\s+against SmoothGrad's 0\.\d+ \(.*?\) and guided "
        r"backprop's 0\.\d+ \(.*?\)), the top",
        EVAL,
        *method_ci("Robustness-bordered-2", "insens", not_in_top_group),
        *method_ci("Robustness-bordered-2", "smoothgrad", in_top_group),
        *method_ci("Robustness-bordered-2", "guided_backprop", in_top_group),
    ),
    N(
        EVAL_SECTION,
        r"puts it at (0\.\d+ \(.*?\) against SmoothGrad's\s+0\.\d+ \(.*?\))\.",
        EVAL,
        *method_ci("MaxSensitivity", "insens", not_in_top_group),
        *method_ci("MaxSensitivity", "smoothgrad", in_top_group),
    ),
    N(
        EVAL_SECTION,
        r"RandomLogit \((1\.000):",
        EVAL,
        (not_in_top_group("RandomLogit", "insens"), F3),
    ),
    N(
        EVAL_SECTION,
        r"high on MPRT \((0\.\d+ \(.*?\)), lower",
        EVAL,
        *method_ci("MPRT", "insens", not_in_top_group),
    ),
    N(EVAL_SECTION, r"seeds × (\d+) test digits", EVAL, ("config/num_images", INT)),
    N(EVAL_SECTION, r"computed in ([\d.]+)\s+minutes", EVAL, ("config/seconds/total", F1, 1 / 60)),
    N(
        EVAL_SECTION,
        r"difference ([\d.e-]+ over \d+) digits",
        EVAL,
        (identity("lrp_epsilon = gradient_x_input", "max_relative"), E1),
        (identity("lrp_epsilon = gradient_x_input", "images"), INT),
    ),
    N(
        EVAL_SECTION,
        r"α1β0 by up to ([\d.e-]+ and\s+[\d.e-]+) on these",
        EVAL,
        (identity("lrp_zplus = lrp_alpha1_beta0", "max_relative"), E1),
        (identity("deep_taylor = lrp_alpha1_beta0", "max_relative"), E1),
    ),
    N(
        EVAL_SECTION,
        r"are perturbed, (\d+–\d+)% of them",
        EVAL,
        ("config/fractions/0", ".0f", PCT),
        ("config/fractions/-1", ".0f", PCT),
    ),
    N(
        EVAL_SECTION,
        r"top pixels switch (0\.\d+\s+\(.*?\)) of the hidden",
        EVAL,
        (not_in_top_group("StateChange-baseline", "insens"), F3),
        *interval(f"{SC}/methods/insens")[1:],
    ),
    N(
        EVAL_SECTION,
        r"Deep Taylor's (0\.\d+ \(.*?\)), the top",
        EVAL,
        (only_member("StateChange-baseline", "deep_taylor"), F3),
        *interval(f"{SC}/methods/deep_taylor")[1:],
    ),
    N(
        EVAL_SECTION,
        r"a random order's (0\.\d+ \(.*?\))\.",
        EVAL,
        *interval(f"{SC}/controls/random"),
    ),
    N(
        EVAL_SECTION,
        r"noise of σ ([\d.]+), clipped",
        EVAL,
        ("config/state_change_noise_sigma", "g"),
    ),
    N(
        EVAL_SECTION,
        r"order \(Insens (0\.\d+ \(.*?\)), random",
        EVAL,
        (not_in_top_group("StateChange-noise", "insens"), F3),
        *interval(f"{SCN}/methods/insens")[1:],
    ),
    N(EVAL_SECTION, r", random (0\.\d+ \(.*?\))\):", EVAL, *interval(f"{SCN}/controls/random")),
    N(
        EVAL_SECTION,
        r"integrated gradients \((0\.\d+ \(.*?\))\); Insens",
        EVAL,
        *method_ci("Deletion", "gradient_x_input", in_top_group),
    ),
    N(
        EVAL_SECTION,
        r"\)\); Insens (0\.\d+\s+\(.*?\)); a random",
        EVAL,
        *method_ci("Deletion", "insens", not_in_top_group),
    ),
    N(
        EVAL_SECTION,
        r"; a random order (0\.\d+ \(.*?\))\.",
        EVAL,
        *interval("metrics/Deletion/controls/random"),
    ),
    # --- the README's headline results (each also on its docs page) ---------------------------
    N(
        HEADLINE,
        r"paired tests\) took ([\d.]+) minutes for MNIST",
        EVAL,
        ("config/seconds/total", F1, 1 / 60),
    ),
    N(
        HEADLINE,
        r"minutes for MNIST \((\d+ networks × \d+) digits\)",
        EVAL,
        (lambda d: len(d["seeds"]), INT),
        ("config/num_images", INT),
    ),
    N(
        HEADLINE,
        r"digits\) and ([\d.]+)\s+minutes for CIFAR-10",
        CEVAL,
        ("config/seconds/total", F1, 1 / 60),
    ),
    N(
        HEADLINE,
        r"minutes for CIFAR-10 \((\d+ networks × \d+) images\)",
        CEVAL,
        (lambda d: len(d["seeds"]), INT),
        ("config/num_images", INT),
    ),
    N(
        HEADLINE,
        r"random\s+ones \((0\.\d+ \(.*?\) against 0\.\d+ \(.*?\))\), and its deletion",
        CEVAL,
        *method_ci("StateChange-baseline", "insens", only_member),
        *interval("metrics/StateChange-baseline/controls/random"),
    ),
    N(
        HEADLINE,
        r"test accuracy is (0\.\d+ on clean\s+digits and 0\.\d+ / 0\.\d+ / 0\.\d+) on the",
        NOISE,
        ("clean_accuracy", F4),
        *((accuracy(v), F4) for v in ("bordered", "background", "framed")),
    ),
    N(
        HEADLINE,
        r"\(paper: (0\.\d+ / 0\.\d+ / 0\.\d+);",
        NOISE,
        *((f"paper/{v}", F2) for v in ("bordered", "background", "framed")),
    ),
    N(
        HEADLINE,
        r"bordered map (\(σ \d\) 0\.\d+ \(.*?\)) against",
        EVAL,
        ("config/sigmas/2", "g"),
        *method_ci("Robustness-bordered-2", "insens", not_in_top_group),
    ),
    N(
        HEADLINE,
        r"SmoothGrad's (0\.\d+\s+\(.*?\)), over",
        EVAL,
        *method_ci("Robustness-bordered-2", "smoothgrad", in_top_group),
    ),
    N(
        HEADLINE,
        r"over (\d+ networks × \d+ digits); Insens is in no top group",
        EVAL,
        (lambda d: len(d["seeds"]) if not sweep_top_group_count("insens")(d) else "in one", INT),
        ("config/sweep_images", INT),
    ),
    N(
        HEADLINE,
        r"(\d+\.\d+ img/s for full-size 2CONV at\s+batch \d+) on",
        CPU,
        ("cases/insens@64/images_per_s", F1),
        ("config/batches", INT),
    ),
    N(HEADLINE, r"(\d+)× the naive", CPU, ("ratios/64/insens_vs_naive_speed", ".0f")),
    N(
        HEADLINE,
        r"with (\d+\.\d+)% of its memory",
        CPU,
        ("ratios/64/insens_vs_naive_xla_temp_bytes_per_image", F1, PCT),
    ),
    N(
        HEADLINE,
        r"area (0\.\d+ \(.*?\)) against",
        EVAL,
        *method_ci("Deletion", "insens", not_in_top_group),
    ),
    N(
        HEADLINE,
        r"gradient × input's (0\.\d+\s+\(.*?\)), lower",
        EVAL,
        *method_ci("Deletion", "gradient_x_input", in_top_group),
    ),
    N(HEADLINE, r"is better, (\d+ networks × \d+) digits", EVAL, *EVAL_SIZE),
    # --- Reading an Insens map -----------------------------------------------------------------
    N(
        READING,
        r"rank correlation (1\.00) with the trained map",
        METRICS,
        (f"{RAND}/insens/Dense_1/spearman/mean", F2),
    ),
    N(
        READING,
        r"trained map over (\d+)\s+digits",
        METRICS,
        (f"{RAND}/insens/Dense_1/spearman/n", INT),
    ),
    N(READING, r"convolution has ([\d,]+) of the", NOISE, (lambda d: inactive(d, 0), ",.0f")),
    N(READING, r"of the ([\d,]+)\s+inactive hidden neurons", NOISE, (inactive, ",.0f")),
    N(
        READING,
        r"\((\d+%); from the per-layer",
        NOISE,
        (lambda d: inactive(d, 0) / inactive(d), ".0f", PCT),
    ),
    N(READING, r"Over the ([\d,]+) clean test digits", NOISE, ("insens_all/num_images", ",d")),
    *(
        N(
            READING,
            pattern,
            NOISE,
            *[(functools.partial(layer_term, condition=c, layer=k), F3) for k in range(3)],
        )
        for c, pattern in (
            (
                "clean",
                r"mean \|map_l\| is (0\.\d+ of the three layers' sum on clean digits \(conv2"
                r"\s+0\.\d+, dense 0\.\d+)\)",
            ),
            ("bordered", r"and (0\.\d+ under bordered noise \(conv2\s+0\.\d+, dense 0\.\d+)\)"),
        )
    ),
    N(
        READING,
        r"over the first ([\d,]+) test digits \(the per-layer",
        NOISE,
        ("insens_layers/num_images", ",d"),
    ),
    N(
        READING,
        r"a share of\s+(0\.\d+ ± 0\.\d+) of \|Insens\|",
        NOISE,
        *mean_std("insens_all/share_on_digit_outline", F3),
    ),
    N(READING, r"(\d+)-pixel outline", NOISE, ("config/outline_radius", INT)),
    N(READING, r"covers\s+(0\.\d+) of the image", METRICS, ("region_fraction", F3)),
    N(READING, r"close to the (0\.\d+) of a uniform", METRICS, ("region_fraction", F3)),
    N(READING, r"\(\"background\", σ = (\d+)\)", NOISE, ("config/sigma", "g")),
    N(READING, r"accuracy falls to (0\.\d+)", NOISE, (accuracy("background"), F3)),
    N(
        READING,
        r"digit and outline falls to (0\.\d+ \(\d+ digits)\)",
        METRICS,
        (f"{ROB}/insens/background/on_digit/mean", F3),
        (f"{ROB}/insens/background/on_digit/n", INT),
    ),
    # --- MNIST with noise ----------------------------------------------------------------------
    N(MN, r"\((\d+) epochs, ([\d.]+) s", NOISE, ("config/train/epochs", INT)),
    N(MN, r"\(\d+ epochs, ([\d.]+) s", NOISE, ("config/train_seconds", F1)),
    N(MN, r"accuracy on the ([\d,]+) test images", NOISE, ("config/num_test", ",d")),
    N(MN, r"noisy versions at σ = (\d+)", NOISE, ("config/sigma", "g")),
    N(MN, r"paper does not give σ; ([\d.]+) is the", NOISE, ("config/sigma_best_fit_this_run", F1)),
    N(
        MN,
        r"the whole\s+sweep ([\d.]+–[\d.]+)",
        NOISE,
        ("config/sigmas/0", F1),
        ("config/sigmas/-1", F1),
    ),
    N(MN, r"^(\| clean \|.*)$", NOISE, ("clean_accuracy", F4), ("paper/clean_accuracy_value", F2)),
    *(
        N(MN, rf"^(\| noisy {v} \|.*)$", NOISE, (accuracy(v), F4), (f"paper/{v}", F2))
        for v in ("bordered", "background", "framed")
    ),
    N(
        MN,
        r"Trained again from (\d+ seeds \(\d+–\d+),",
        SEEDS,
        (lambda d: len(d["seeds"]), INT),
        ("seeds/0", INT),
        ("seeds/-1", INT),
    ),
    *(
        N(
            MN,
            rf"{label} ([\d.]+ \([\d.]+–[\d.]+)\)",
            SEEDS,
            (f"numbers/{key}/mean", fmt),
            (f"numbers/{key}/ci95/0", fmt),
            (f"numbers/{key}/ci95/1", fmt),
        )
        for label, key, fmt in (
            ("clean", "clean_accuracy", F4),
            ("bordered", "bordered_accuracy", F3),
            ("background", "background_accuracy", F3),
            ("framed", "framed_accuracy", F3),
        )
    ),
    N(
        MN,
        r"active\s+fraction ([\d.]+% \([\d.]+–[\d.]+)%\)",
        SEEDS,
        ("numbers/active_fraction/mean", F1, PCT),
        ("numbers/active_fraction/ci95/0", F1, PCT),
        ("numbers/active_fraction/ci95/1", F1, PCT),
    ),
    N(
        MN,
        r"bordered stays above the paper's (0\.\d+)",
        SEEDS,
        (lambda d: 0.87 if seed_range(d, "bordered")[0] > 0.87 else "not every seed", F2),
    ),
    N(
        MN,
        r"framed below its (0\.\d+) for every seed",
        SEEDS,
        (lambda d: 0.45 if seed_range(d, "framed")[1] < 0.45 else "not every seed", F2),
    ),
    N(
        MN,
        r"per clean test image: ([\d.]+% ± [\d.]+%)",
        NOISE,
        *mean_std("active_fraction/overall", F1, PCT),
    ),
    N(MN, r"\(paper: about (\d+)%\)", NOISE, ("paper/active_fraction", ".0f", PCT)),
    N(
        MN,
        r"per layer\s+(\d+% / \d+% / \d+%)",
        NOISE,
        *((f"active_fraction/layers/{i}/mean", ".0f", PCT) for i in range(3)),
    ),
    N(MN, r"over the first ([\d,]+) test digits", NOISE, ("insens_layers/num_images", ",d")),
    N(
        MN,
        r"outline \((0\.\d+–0\.\d+) of its \|values\|\)",
        NOISE,
        (lambda d: min(clean_layer_shares(d)), F3),
        (lambda d: max(clean_layer_shares(d)), F3),
    ),
    N(
        MN,
        r"the dense layer carries the digit: (0\.\d+)",
        NOISE,
        (layer_share("bordered", 2, place=1), F3),
    ),
    N(
        MN,
        r"against (0\.\d+) for the first convolution",
        NOISE,
        (below_uniform("bordered", 0), F3),
    ),
    N(MN, r"below the (0\.\d+) of a uniform map", NOISE, ("insens_layers/region_fraction", F3)),
    N(MN, r"and (0\.\d+) for Insens itself", NOISE, (layer_share("bordered", None), F3)),
    N(
        MN,
        r"the two convolutions hold (\d+)% of",
        NOISE,
        (conv_inactive_fraction("bordered"), ".0f", PCT),
    ),
    # --- Measuring the claims on MNIST ---------------------------------------------------------
    N(MM, r"Over (\d+) test digits", METRICS, ("config/num_images", INT)),
    N(
        MM,
        r"Insens (0\.\d+ / 0\.\d+ / 0\.\d+) \(bordered",
        METRICS,
        *((f"{ROB}/insens/{v}/spearman/mean", F3) for v in ("bordered", "background", "framed")),
    ),
    N(
        MM,
        r"framed\), rank (\d+ / \d+ / \d+ of \d+)\.",
        METRICS,
        *((rank_of(ROB, f"{v}/spearman", True), INT) for v in ("bordered", "background", "framed")),
        (n_methods, INT),
    ),
    *(
        N(MM, pattern, METRICS, (placed(ROB, f"{noise}/spearman", True, name, place), F3))
        for pattern, noise, name, place in (
            (r"best on bordered \((0\.\d+)\)", "bordered", "smoothgrad", 1),
            (r"on background\s+\((0\.\d+)\)", "background", "smoothgrad", 1),
            (r"on framed deep_taylor_bounded \((0\.\d+)\)", "framed", "deep_taylor_bounded", 1),
            (r"and deep_taylor \((0\.\d+)\) score above", "framed", "deep_taylor", 2),
            (r"score above\s+SmoothGrad \((0\.\d+)\)", "framed", "smoothgrad", 3),
        )
    ),
    N(
        MM,
        r"undefined \(an all-zero map[^)]*\) on (\d+) of the \d+",
        METRICS,
        (undefined_framed, INT),
    ),
    N(MM, r"on \d+ of the (\d+) framed images", METRICS, ("config/num_images", INT)),
    N(
        MM,
        r"over the other (\d+)\.",
        METRICS,
        (f"{ROB}/deep_taylor_bounded/framed/spearman/n", INT),
    ),
    N(
        MM,
        r"deletion AUC (0\.\d+) against (0\.\d+) for random",
        METRICS,
        (f"{FAITH}/insens/signed/deletion/auc_probability/mean", F3),
    ),
    N(
        MM,
        r"deletion AUC 0\.\d+ against (0\.\d+) for random",
        METRICS,
        (f"{FAITH}/random/deletion/auc_probability/mean", F3),
    ),
    N(
        MM,
        r"ranks (\d+th–\d+th\s+of \d+)",
        METRICS,
        (rank_span(FAITH, FAITH4, LOWER_HIGHER, min), INT),
        (rank_span(FAITH, FAITH4, LOWER_HIGHER, max), INT),
        (n_methods, INT),
    ),
    N(
        MM,
        r"unchanged \(rank correlation (1\.00)\)",
        METRICS,
        (f"{RAND}/insens/Dense_1/spearman/mean", F2),
    ),
    N(MM, r"signed map \((0\.\d+)\)", METRICS, (f"{RAND}/insens/Conv_0/spearman/mean", F2)),
    N(
        MM,
        r"\(\|map\|: (0\.\d+);\s+\d+ digits\)",
        METRICS,
        (f"{RAND}/insens/Conv_0/spearman_abs/mean", F3),
    ),
    N(
        MM,
        r"\(\|map\|: 0\.\d+;\s+(\d+) digits\)",
        METRICS,
        (f"{RAND}/insens/Conv_0/spearman_abs/n", INT),
    ),
    # --- Pixel encodings -----------------------------------------------------------------------
    N(
        ENC,
        r"nets, (\d+) epochs each",
        "encodings_fashion_mnist.json",
        ("config/train/epochs", INT),
    ),
    N(
        ENC,
        r"test accuracy (0\.\d+–0\.\d+)",
        "encodings_fashion_mnist.json",
        (lambda d: min(d["accuracy"].values()), F2),
        (lambda d: max(d["accuracy"].values()), F2),
    ),
    N(
        ENC,
        r"Insens maps is (−0\.\d+ ± 0\.\d+)",
        "encodings_fashion_mnist.json",
        (placed("reversal", "mean vs neg_mean/pearson", False, "insens", 1), F2),
        ("reversal/insens/mean vs neg_mean/pearson/std", F2),
    ),
    N(
        ENC,
        r"the most reversed of the (\d+) methods",
        "encodings_fashion_mnist.json",
        (n_methods, INT),
    ),
    # --- CIFAR-10 ------------------------------------------------------------------------------
    N(CIF, r"(\d+) epochs:", "cifar10.json", ("config/train/epochs", INT)),
    N(CIF, r"test accuracy (0\.\d+)\.", "cifar10.json", ("test_accuracy", F3)),
    # --- the CIFAR-10 evaluation over three networks (results/cifar10_evaluation.json) ------
    N(CIF, r"JPEG copy from (\d+) seeds", CEVAL, (lambda d: len(d["seeds"]), INT)),
    N(
        CIF,
        r"\(test accuracy (0\.\d+, 0\.\d+ and 0\.\d+);",
        CEVAL,
        *((f"test_accuracy/{s}", F4) for s in ("0", "1", "2")),
    ),
    N(CIF, r"explains its first\s+(\d+) test images", CEVAL, ("config/num_images", INT)),
    N(
        CIF,
        r"Gaussian noise at σ (0\.\d+, 0\.\d+ and\s+0\.\d+, \d+) draws each",
        CEVAL,
        *((f"config/sigmas/{i}", "g") for i in range(3)),
        ("config/draws", INT),
    ),
    N(
        CIF,
        r"explain again use the first (\d+,\s+SmoothMPRT the first \d+)\.",
        CEVAL,
        ("config/explain_images", INT),
        ("metrics/SmoothMPRT/methods/insens/n_images", INT),
    ),
    N(CIF, r"The run took\s+([\d.]+) minutes", CEVAL, ("config/seconds/total", F1, 1 / 60)),
    N(
        CIF,
        r"mean\s+colour, switch (0\.\d+ \(.*?\)) of the hidden",
        CEVAL,
        *method_ci("StateChange-baseline", "insens", only_member),
    ),
    N(
        CIF,
        r"a random\s+order switches (0\.\d+ \(.*?\))\.",
        CEVAL,
        *interval("metrics/StateChange-baseline/controls/random"),
    ),
    N(
        CIF,
        r"noisy replacement gradient leads, (0\.\d+\s+\(.*?\)) against",
        CEVAL,
        *method_ci("StateChange-noise", "gradient", only_member),
    ),
    N(
        CIF,
        r"against Insens's (0\.\d+ \(.*?\)) and random's",
        CEVAL,
        *interval("metrics/StateChange-noise/methods/insens"),
    ),
    N(
        CIF,
        r"and random's (0\.\d+ \(.*?\))\.\s+Insens is also",
        CEVAL,
        *interval("metrics/StateChange-noise/controls/random"),
    ),
    N(
        CIF,
        r"SmoothGrad and gradient, (0\.\d+\s+\(.*?\) on \d+) images",
        CEVAL,
        *method_ci("SmoothMPRT", "insens", in_top_group),
        ("metrics/SmoothMPRT/methods/insens/n_images", INT),
    ),
    N(
        CIF,
        r"deletion (0\.\d+ \(.*?\)), worse than a random order's",
        CEVAL,
        *interval("metrics/Deletion/methods/insens"),
    ),
    N(
        CIF,
        r"worse than a random order's (0\.\d+\s+\(.*?\));",
        CEVAL,
        *interval("metrics/Deletion/controls/random"),
    ),
    N(
        CIF,
        r"; insertion (0\.\d+ \(.*?\)), better than random's (?:.|\n)*?\(0\.2",
        CEVAL,
        *interval("metrics/Insertion/methods/insens"),
    ),
    N(
        CIF,
        r"better than random's (0\.\d+ \(.*?\));",
        CEVAL,
        *interval("metrics/Insertion/controls/random"),
    ),
    N(
        CIF,
        r"most relevant pixels first (0\.\d+ \(.*?\)), at",
        CEVAL,
        *interval("metrics/ROAD-MoRF/methods/insens"),
    ),
    N(
        CIF,
        r"blurred random order's\s+(0\.\d+ \(.*?\))\. SmoothGrad",
        CEVAL,
        *interval("metrics/ROAD-MoRF/controls/blurred_random"),
    ),
    N(
        CIF,
        r"FaithfulnessCorrelation \((0\.\d+ \(.*?\)) against Insens's (?:.|\n)*?\)\)\.",
        CEVAL,
        *method_ci("FaithfulnessCorrelation", "smoothgrad", only_member),
    ),
    N(
        CIF,
        r"against Insens's (0\.\d+ \(.*?\))\)\.",
        CEVAL,
        *interval("metrics/FaithfulnessCorrelation/methods/insens"),
    ),
    N(
        CIF,
        r"images where every method is defined \((\d+, \d+ and \d+) of \d+\)",
        CEVAL,
        *((f"metrics/Robustness-gaussian-{s:g}/top_group/n_images", INT) for s in (0.05, 0.1, 0.2)),
    ),
    N(
        CIF,
        r"and \d+ of (\d+)\); at",
        CEVAL,
        ("config/sweep_images", INT),
    ),
    N(
        CIF,
        r"at σ (0\.\d+ Insens scores 0\.\d+\s+\(.*?\)) against its",
        CEVAL,
        ("config/sigmas/1", "g"),
        *method_ci("Robustness-gaussian-0.1", "insens", not_in_top_group),
    ),
    N(
        CIF,
        r"against its (0\.\d+ \(.*?\))\. MaxSensitivity",
        CEVAL,
        *method_ci("Robustness-gaussian-0.1", "deep_taylor_bounded", only_member),
    ),
    N(
        CIF,
        r"MaxSensitivity: Insens (\d\.\d+\s+\(.*?\)), SmoothGrad",
        CEVAL,
        *method_ci("MaxSensitivity", "insens", not_in_top_group),
    ),
    N(
        CIF,
        r"MaxSensitivity: Insens (?:.|\n)*?, SmoothGrad (0\.\d+ \(.*?\)) \(lower",
        CEVAL,
        *method_ci("MaxSensitivity", "smoothgrad", best_of),
    ),
    N(
        CIF,
        r"RandomLogit (\d\.\d+) for Insens",
        CEVAL,
        ("metrics/RandomLogit/methods/insens/mean", F3),
    ),
    N(
        CIF,
        r"MPRT (0\.\d+\s+\(.*?\)) against SmoothGrad's",
        CEVAL,
        *method_ci("MPRT", "insens", not_in_top_group),
    ),
    N(
        CIF,
        r"against SmoothGrad's (0\.\d+ \(.*?\)) \(lower is better\)\.\n- LRP",
        CEVAL,
        *method_ci("MPRT", "smoothgrad", best_of),
    ),
    N(
        CIF,
        r"differ by up to (\d\.\de-\d+) of the",
        CEVAL,
        (lambda d: d["identities"]["lrp_epsilon = gradient_x_input"]["max_relative"], ".1e"),
    ),
    N(
        CIF,
        r"largest value on (\d+ images, above the 0\.\d+) tolerance",
        CEVAL,
        ("identities/lrp_epsilon = gradient_x_input/images", INT),
        ("identity_tolerance", "g"),
    ),
    N(CIF, r"\(σ = ([\d.]+)\)", "cifar10.json", ("config/sigma", "g")),
    N(
        CIF,
        r"rank correlation\s+of (0\.\d+) with the clean maps",
        "cifar10.json",
        ("robustness/insens/spearman/mean", F3),
    ),
    N(
        CIF,
        r"with the clean maps over (\d+) test images",
        "cifar10.json",
        ("config/num_images", INT),
    ),
    N(
        CIF,
        r"test images \(rank (\d+ of \d+)\)",
        "cifar10.json",
        (
            lambda d: rank({m: v["spearman"] for m, v in d["robustness"].items()}, "insens", True),
            INT,
        ),
        (n_methods, INT),
    ),
    N(
        CIF,
        r"deep_taylor_bounded \((0\.\d+), undefined on (\d+) of the (\d+) images\)",
        "cifar10.json",
        (lambda d: placed_cifar(d, "deep_taylor_bounded", 1), F3),
    ),
    N(
        CIF,
        r"deep_taylor_bounded \(0\.\d+, undefined on (\d+ of the \d+) images\)",
        "cifar10.json",
        ("robustness/deep_taylor_bounded/spearman/n_undefined", INT),
        ("config/num_images", INT),
    ),
    N(
        CIF,
        r"then SmoothGrad \((0\.\d+)\)",
        "cifar10.json",
        (lambda d: placed_cifar(d, "smoothgrad", 2), F3),
    ),
    # --- Pong ----------------------------------------------------------------------------------
    N(PONG, r"trained for ([\d.]+)M frames", "pong_training.json", ("frames_trained", F2, 1e-6)),
    N(PONG, r"about (\d+) minutes", "pong_training.json", ("training_wall_seconds", ".0f", 1 / 60)),
    N(
        PONG,
        r"at (\+[\d.]+ ± [\d.]+) mean return",
        "pong_training.json",
        *return_mean_std("latest"),
    ),
    N(PONG, r"over (\d+) episodes", "pong_training.json", ("evaluation/episodes", INT)),
    N(
        PONG,
        r"against\s+(−[\d.]+ ± [\d.]+) for a random",
        "pong_training.json",
        *return_mean_std("random"),
    ),
    N(
        PONG,
        r"mean peaked at ([\d.]+)M frames",
        "pong_training.json",
        (lambda d: d["best_checkpoint_step"] * d["config"]["frame_skip"], F2, 1e-6),
    ),
    N(
        PONG,
        r"which evaluates at (\+[\d.]+ ± [\d.]+):",
        "pong_training.json",
        *return_mean_std("best"),
    ),
    N(
        PONG,
        r"repeats every (\d+) pixels, the stride",
        "pong_lattice.json",
        ("networks/stride4/lattice_period", INT),
    ),
    # --- Baselines and speed -------------------------------------------------------------------
    N(BASE, r"batch (\d+) of", ATTR, ("config/batch", INT)),
    N(BASE, r"limited to (\d+)\s+threads", ATTR, ("config/threads", INT)),
    N(BASE, r"median of (\d+) timed calls", ATTR, ("config/repeats", INT)),
    N(BASE, r"load average ([\d.]+ at the start, [\d.]+) at the end", ATTR, *LOAD_AT_START_AND_END),
    N(
        BASE,
        r"timed\s+([\d,]+ and [\d,]+) img/s",
        ATTR,
        ("library/lrp_alpha_beta/images_per_s", ",.0f"),
        ("library/lrp_alpha1_beta0/images_per_s", ",.0f"),
    ),
    attribution_row("gradient", "gradient", "captum_saliency"),
    attribution_row("gradient × input", "gradient_x_input", "captum_input_x_gradient"),
    attribution_row(
        "integrated gradients (64 points)", "integrated_gradients", "captum_integrated_gradients"
    ),
    attribution_row("SmoothGrad (32 samples)", "smoothgrad", "captum_smoothgrad"),
    attribution_row("guided backprop", "guided_backprop", "captum_guided_backprop"),
    attribution_row("DeconvNet", "deconvnet", "captum_deconvolution"),
    attribution_row("LRP-ε", "lrp_epsilon", "zennit_epsilon_plus"),
    attribution_row("LRP z+", "lrp_zplus", "zennit_epsilon_plus"),
    attribution_row("LRP α2β1", "lrp_alpha2_beta1", "zennit_epsilon_plus"),
    attribution_row("Deep Taylor", "deep_taylor", "zennit_epsilon_plus"),
    attribution_row("Deep Taylor bounded", "deep_taylor_bounded", "zennit_epsilon_plus"),
    # --- Metrics speed ---------------------------------------------------------------------------
    N(QSPEED, r"first (\d+) MNIST test digits", QBENCH, ("config/images", INT)),
    N(QSPEED, r"`--seed` (\d+)", QBENCH, ("config/seed", INT)),
    N(QSPEED, r"Quantus (\S+) on a torch port", QBENCH, ("machine/quantus_version", "s")),
    N(QSPEED, r"over batches of (\d+) images", QBENCH, ("config/batch", INT)),
    N(QSPEED, r"its own batches of (\d+)", QBENCH, ("config/quantus_batch", INT)),
    N(QSPEED, r"limited to (\d+) threads", QBENCH, ("config/threads", INT)),
    N(QSPEED, r"`k` (\d+)", QBENCH, ("metrics/TopKIntersection/options/k", INT)),
    N(QSPEED, r"`num_classes` (\d+)", QBENCH, ("metrics/RandomLogit/options/num_classes", INT)),
    N(
        QSPEED,
        r"timed on the first (\d+) images",
        QBENCH,
        ("metrics/PixelFlipping/quantus/images", INT),
    ),
    N(QSPEED, r"four batches of (\d+) images would", QBENCH, ("config/images", INT)),
    N(
        QSPEED,
        r"load average ([\d.]+ at the start, [\d.]+) at the end",
        QBENCH,
        *LOAD_AT_START_AND_END,
    ),
    *(
        metric_speed_row(n, met=n not in EXPLAIN_AGAIN)
        for n in (
            "PixelFlipping",
            "FaithfulnessCorrelation",
            "FaithfulnessEstimate",
            "Monotonicity",
            "RegionPerturbation",
            "Selectivity",
            "ROAD",
            "MaxSensitivity",
            "AvgSensitivity",
            "LocalLipschitzEstimate",
            "RelativeInputStability",
            "RandomLogit",
            "MPRT",
            "SmoothMPRT",
            "EfficientMPRT",
            "Sparseness",
            "Complexity",
            "EffectiveComplexity",
            "RelevanceMassAccuracy",
            "RelevanceRankAccuracy",
            "TopKIntersection",
            "PointingGame",
            "AttributionLocalisation",
            "Focus",
            "Completeness",
            "NonSensitivity",
            "InputInvariance",
        )
    ),
    N(
        QSPEED,
        r"gradient at (\d+) noisy copies of each of the (\d+) digits",
        QBENCH,
        ("explanation_floor/nr_samples", INT),
    ),
    N(QSPEED, r"noisy copies of each of the (\d+) digits", QBENCH, ("config/images", INT)),
    N(
        QSPEED,
        r"\(([\d,]+) gradients, timed on the",
        QBENCH,
        (lambda d: d["config"]["images"] * d["explanation_floor"]["nr_samples"], ",d"),
    ),
    N(QSPEED, r"timed on the\s+first (\d+) digits", QBENCH, ("explanation_floor/images", INT)),
    N(
        QSPEED,
        r"took ([\d.]+ s here and [\d.]+) s in torch",
        QBENCH,
        ("explanation_floor/slp/seconds", F1),
        ("explanation_floor/torch/seconds", F1),
    ),
    N(
        QSPEED,
        r"took ([\d.]+ times that here and [\d.]+) times\s+torch's",
        QBENCH,
        (
            lambda d: (
                d["metrics"]["MaxSensitivity"]["slp"]["seconds"]
                / d["explanation_floor"]["slp"]["seconds"]
            ),
            F2,
        ),
        (
            lambda d: (
                d["metrics"]["MaxSensitivity"]["quantus"]["seconds"]
                / d["explanation_floor"]["torch"]["seconds"]
            ),
            F2,
        ),
    ),
    N(
        QSPEED,
        r"the lowest, Monotonicity, ([\d.]+×; NonSensitivity [\d.]+)×",
        QEIGEN,
        (lowest_ratio("Monotonicity"), F2),
        ("metrics/NonSensitivity/ratio", F2),
    ),
    N(
        QSPEED,
        r"MPRT reached ([\d.]+)×",
        QEIGEN,
        ("metrics/MPRT/ratio", F2),
    ),
    N(QSPEED, r"XLA \(jax ([\d.]+)\) runs each", QEIGEN, ("machine/jax_version", "s")),
    N(
        QSPEED,
        r"load\s+average ([\d.]+ when it started, [\d.]+) when it ended",
        QEIGEN,
        *LOAD_AT_START_AND_END,
    ),
    N(
        QSPEED,
        r"PixelFlipping\s+took ([\d.]+) s there",
        QEIGEN,
        ("metrics/PixelFlipping/slp/seconds", F1),
    ),
    N(
        QSPEED,
        r"against ([\d.]+) s in the table's run",
        QBENCH,
        ("metrics/PixelFlipping/slp/seconds", F1),
    ),
    N(
        QSPEED,
        r"took ([\d.]+) times less time here than in torch",
        QEIGEN,
        ("explanation_floor/ratio", F2),
    ),
    N(QSPEED, r"sends (\d+) perturbed inputs", QBENCH, ("config/step_batch", INT)),
    N(QSPEED, r"`jax.vmap` over (\d+) digits, the", QBENCH, ("config/batch", INT)),
    N(QSPEED, r"the\s+(\d+) steps of each used", QBENCH, ("config/step_batch", INT)),
    N(
        QSPEED,
        r"the same (\d+) inputs on one axis",
        QBENCH,
        (lambda d: d["config"]["step_batch"] * d["config"]["batch"], INT),
    ),
    N(QSPEED, r"over (\d+)\s+digits, calls of", QBENCH, ("config/batch", INT)),
    N(
        QSPEED,
        r"calls of (\d+)\)",
        QBENCH,
        (lambda d: d["config"]["step_batch"] * d["config"]["batch"], INT),
    ),
    N(
        QSPEED,
        r"run with (\d+) at a time",
        QSTEP64,
        ("config/step_batch", INT),
    ),
    N(
        QSPEED,
        r"PixelFlipping took\s+([\d.]+ s and MaxSensitivity [\d.]+) s",
        QSTEP64,
        ("metrics/PixelFlipping/slp/seconds", F1),
        ("metrics/MaxSensitivity/slp/seconds", F1),
    ),
    # --- Insens speed: before and after the redesign of the internals ---------------------------
    N(
        SPEED,
        r"load average from ([\d.]+ to [\d.]+); \[results/bench_versions\.md",
        VERSIONS,
        ("config/load_start", F2),
        ("config/load_end", F2),
    ),
    N(SPEED, r"on each of the (\d+) zoo networks", VERSIONS, (versions_networks, INT)),
    N(
        SPEED,
        r"zoo networks at (\d+ and \d+)\s+inputs per call, each version",
        VERSIONS,
        *two_batches(versions_batches),
    ),
    N(SPEED, r"maps agree to (\S+) of their", VERSIONS, (versions_range("max_rel_diff", max), E1)),
    versions_span(r"The median call\s+took ([\d.]+–[\d.]+) times as long", "call_ratio", F3),
    N(
        SPEED,
        r"(\d+ cases were over [\d.]+)\.",
        VERSIONS,
        (lambda d: versions_count(d, "slower"), INT),
        ("config/tolerance", F2),
    ),
    N(
        SPEED,
        r"same route was\s+chosen in (\d+ of \d+) cases",
        VERSIONS,
        (lambda d: versions_count(d, "same route"), INT),
        (lambda d: versions_count(d, "all"), INT),
    ),
    versions_span(
        r"cases, where the call took ([\d.]+–[\d.]+) times", "call_ratio", F3, same_route=True
    ),
    N(
        SPEED,
        r"in the other (\d+) the\s+route now chosen",
        VERSIONS,
        (lambda d: versions_count(d, "all") - versions_count(d, "same route"), INT),
    ),
    versions_span(
        r"was ([\d.]+–[\d.]+) times the before version's on the same route",
        "compile_ratio",
        F2,
        same_route=True,
    ),
    N(
        SPEED,
        r"on the same route, and ([\d.]+) times",
        VERSIONS,
        (versions_range("compile_ratio", max), F2),
    ),
    # --- Insens speed: 2CONV on the CPU --------------------------------------------------------
    N(SPEED, r"All (\d+) zoo networks were timed", ZOO_ROUTES, (zoo_route_networks, INT)),
    N(
        SPEED,
        r"at (\d+ and \d+) inputs per call",
        ZOO_ROUTES,
        *two_batches(zoo_route_batches),
    ),
    N(
        SPEED,
        r"--no-naive --route-repeats \d+`, ([\d.]+) minutes",
        ZOO_ROUTES,
        MINUTES,
    ),
    N(
        SPEED,
        r"load\s+average from ([\d.]+ to [\d.]+), every route",
        ZOO_ROUTES,
        *LOAD_AT_START_AND_END,
    ),
    N(
        SPEED,
        r"at most ([\d.]+) times the fastest measured",
        ZOO_ROUTES,
        ("route_check/worst_chosen_vs_fastest", F2),
    ),
    N(
        SPEED,
        r"prediction was within ([\d.]+) times",
        ZOO_ROUTES,
        ("route_check/worst_prediction", F2),
    ),
    N(SPEED, r"at best reach ([\d.]+) times", ZOO_ROUTES, (zoo_blind_choice, F2)),
    N(
        SPEED,
        r"on one input, (cone \d+ ms against the probes' \d+) ms",
        ZOO_ROUTES,
        *zoo_ms_pair("2conv-linen", 1, "cone", "probes", ".0f"),
    ),
    N(
        SPEED,
        r"took (\d+–\d+ ms on the cone route and \d+–\d+) ms on the\s+probes",
        ZOO_ROUTES,
        (zoo_copies_ms("cone", 1, min), ".0f"),
        (zoo_copies_ms("cone", 1, max), ".0f"),
        (zoo_copies_ms("probes", 1, min), ".0f"),
        (zoo_copies_ms("probes", 1, max), ".0f"),
    ),
    N(SPEED, r"was within ([\d.]+) times\.", ZOO_ROUTES, (zoo_copies_worst_choice(1), F2)),
    N(
        SPEED,
        r"the small 2CONV takes ([\d.]+) ms a call",
        ZOO_TINY_CF082BD,
        (zoo_ms("2conv-linen", 1, "cone"), F2),
    ),
    N(
        SPEED,
        r"the cone route was up to ([\d.]+) times faster",
        ZOO_TINY_BEFORE,
        ("route_check/worst_chosen_vs_fastest", F2),
    ),
    N(
        SPEED,
        r"(\d+ of the \d+) network and\s+batch cases over",
        ZOO_TINY_BEFORE,
        (zoo_slow_choices, INT),
        (lambda d: len(d["route_check"]["rows"]), INT),
    ),
    N(
        SPEED,
        r"predictions off by up to ([\d.]+) times",
        ZOO_TINY_BEFORE,
        ("route_check/worst_prediction", F1),
    ),
    N(
        SPEED,
        r"tiny_previous_fit_cpu\.md\),\s+([\d.]+) minutes",
        ZOO_TINY_BEFORE,
        MINUTES,
    ),
    N(SPEED, r"--tiny`, ([\d.]+) minutes", ZOO_TINY_CF082BD, MINUTES),
    N(
        SPEED,
        r"route took at most ([\d.]+) times the fastest at the small size",
        ZOO_TINY_CF082BD,
        ("route_check/worst_chosen_vs_fastest", F2),
    ),
    N(
        SPEED,
        r"the predictions were within\s+([\d.]+) times",
        ZOO_TINY_CF082BD,
        ("route_check/worst_prediction", F2),
    ),
    N(
        SPEED,
        r"the same\s+choice as that one in all (\d+) cases",
        ZOO_TINY_CF082BD,
        (lambda d: zoo_all_same_choices(ZOO_TINY_CF082BD), INT),
    ),
    N(
        SPEED,
        r"\(and in all (\d+) at full size:",
        ZOO_ROUTES_CF082BD,
        (lambda d: zoo_all_same_choices(ZOO_ROUTES_CF082BD), INT),
    ),
    N(SPEED, r"relative speeds \(([\d.]+) and", ZOO_TINY, MINUTES),
    N(SPEED, r"relative speeds \([\d.]+ and ([\d.]+)\s+minutes", ZOO_TINY_RERUN, MINUTES),
    N(
        SPEED,
        r"the chosen route took at most ([\d.]+) and",
        ZOO_TINY,
        (zoo_worst_choice_is("densenet-linen", 1), F2),
    ),
    N(
        SPEED,
        r"the chosen route took at most [\d.]+ and ([\d.]+) times",
        ZOO_TINY_RERUN,
        (zoo_worst_choice_is("qnetwork", 8), F2),
    ),
    N(
        SPEED,
        r"took the dense route, ([\d.]+) ms",
        ZOO_TINY,
        (zoo_ms("densenet-linen", 1, "dense"), F2),
    ),
    N(
        SPEED,
        r"the cone route took\s+([\d.]+) ms",
        ZOO_TINY,
        (zoo_ms("densenet-linen", 1, "cone"), F2),
    ),
    N(
        SPEED,
        r"the faster: ([\d.]+ against [\d.]+) ms\)",
        ZOO_TINY_CF082BD,
        *zoo_ms_pair("densenet-linen", 1, "dense", "cone", F2),
    ),
    N(
        SPEED,
        r"the same case took ([\d.]+ against [\d.]+) ms",
        ZOO_TINY_RERUN,
        *zoo_ms_pair("densenet-linen", 1, "dense", "cone", F2),
    ),
    N(
        SPEED,
        r"the same case took [\d.]+ against [\d.]+ ms, and the small Q-network at eight inputs\s+"
        r"took the cone route, (\d+ ms against the probes' \d+) ms",
        ZOO_TINY_RERUN,
        *zoo_ms_pair("qnetwork", 8, "cone", "probes", ".0f"),
    ),
    N(
        SPEED,
        r"predictions were within ([\d.]+) and",
        ZOO_TINY,
        ("route_check/worst_prediction", F2),
    ),
    N(
        SPEED,
        r"predictions were within [\d.]+ and ([\d.]+) times",
        ZOO_TINY_RERUN,
        ("route_check/worst_prediction", F2),
    ),
    N(SPEED, r"times; (\d+) and \d+ of them were off", ZOO_TINY, (zoo_predictions_off, INT)),
    N(SPEED, r"times; \d+ and (\d+) of them were off", ZOO_TINY_RERUN, (zoo_predictions_off, INT)),
    N(
        SPEED,
        r"predicted at ([\d.]+) of its time in the second run",
        ZOO_TINY_RERUN,
        (
            lambda d: next(
                r["predicted_vs_measured"]["dense"]
                for r in d["route_check"]["rows"]
                if r["network"] == "densenet-linen" and r["batch"] == 8 and r["chosen"] == "dense"
            ),
            F2,
        ),
    ),
    N(
        SPEED,
        r"and at (\d+) inputs on the small ones",
        ZOO_B64,
        (zoo_first_batch, INT),
    ),
    N(
        SPEED,
        r"at (\d+ and \d+) inputs per call alone",
        ZOO_TINY,
        *two_batches(zoo_route_batches),
    ),
    N(
        SPEED,
        r"chose a route up to ([\d.]+) times slower",
        ZOO_B64_BEFORE,
        ("route_check/worst_chosen_vs_fastest", F2),
    ),
    N(
        SPEED,
        r"and on (\d+) of the full-size ones",
        ZOO_FULL64,
        (zoo_route_networks, INT),
    ),
    N(
        SPEED,
        r"the small Q-network the probes at ([\d.]+) times",
        ZOO_B64_BEFORE,
        (zoo_chosen_vs_fastest("qnetwork", 64), F2),
    ),
    N(
        SPEED,
        r"(\d+ of the \d+) networks were over",
        ZOO_B64_BEFORE,
        (zoo_slow_choices, INT),
        (lambda d: len(d["route_check"]["rows"]), INT),
    ),
    N(SPEED, r"--route-batches 64`,\s+([\d.]+) minutes", ZOO_B64_BEFORE, MINUTES),
    N(
        SPEED,
        r"commit `cf082bd`\), fitted with those timings too, chose the fastest route\s+"
        r"on them \(the same command, ([\d.]+) minutes",
        ZOO_B64_CF082BD,
        MINUTES,
    ),
    N(
        SPEED,
        r"timed at (\d+ inputs on \d+) of the full-size",
        ZOO_FULL64_CF082BD,
        (zoo_first_batch, INT),
        (zoo_route_networks, INT),
    ),
    N(
        SPEED,
        r"the dense route on the MLP at\s+([\d.]+) times the probes",
        ZOO_FULL64_CF082BD,
        (zoo_chosen_vs_fastest("mlp", 64), F2),
    ),
    N(
        SPEED,
        r"\((\d+ ms against \d+) ms a call\); the other",
        ZOO_FULL64_CF082BD,
        *zoo_ms_pair("mlp", 64, "dense", "probes", ".0f"),
    ),
    N(
        SPEED,
        r"the other (\d+ of the \d+) were within",
        ZOO_FULL64_CF082BD,
        (lambda d: zoo_route_networks(d) - zoo_slow_choices(d, 1.005), INT),
        (zoo_route_networks, INT),
    ),
    N(
        SPEED,
        r"the other \d+ of the \d+ were within\s+([\d.]+) times",
        ZOO_FULL64_CF082BD,
        (
            lambda d: max(
                r["chosen_vs_fastest"] for r in d["route_check"]["rows"] if r["network"] != "mlp"
            ),
            F2,
        ),
    ),
    N(
        SPEED,
        r"--zoo-only 2conv-linen\S+`,\s+([\d.]+) minutes; \[results/bench_insens_zoo_routes_b64_cf",
        ZOO_FULL64_CF082BD,
        MINUTES,
    ),
    N(
        SPEED,
        r"on the (\d+)\s+full-size networks at (?:\d+) inputs \(the",
        ZOO_FULL64,
        (zoo_route_networks, INT),
    ),
    N(
        SPEED,
        r"full-size networks at (\d+) inputs \(the",
        ZOO_FULL64,
        (zoo_first_batch, INT),
    ),
    N(SPEED, r"the `--zoo-only` command, ([\d.]+) minutes", ZOO_FULL64, MINUTES),
    N(
        SPEED,
        r"the chosen\s+route took at most ([\d.]+) times the fastest, predictions",
        ZOO_FULL64,
        ("route_check/worst_chosen_vs_fastest", F2),
    ),
    N(
        SPEED,
        r"the fastest, predictions within ([\d.]+) times; on the small",
        ZOO_FULL64,
        ("route_check/worst_prediction", F2),
    ),
    N(
        SPEED,
        r"networks at (\d+) inputs \(the `--tiny` command",
        ZOO_B64,
        (zoo_first_batch, INT),
    ),
    N(SPEED, r"the `--tiny` command above, ([\d.]+) minutes", ZOO_B64, MINUTES),
    N(
        SPEED,
        r"at most ([\d.]+) times \(the small `resnet8`",
        ZOO_B64,
        (zoo_worst_choice_is("resnet8", 64), F2),
    ),
    N(
        SPEED,
        r"against the dense route: (\d+ of the \d+) choices there\s+changed",
        ZOO_B64_CF082BD,
        (
            lambda d: 1 if zoo_changed_choices(d) == [("resnet8", 64)] else None,
            INT,
        ),
        (zoo_route_networks, INT),
    ),
    N(
        SPEED,
        r"predictions within ([\d.]+) times\. That last factor",
        ZOO_B64,
        ("route_check/worst_prediction", F2),
    ),
    N(
        SPEED,
        r"measured it at\s+(\d+) ms a call",
        ZOO_B64,
        (zoo_ms("2conv-jnp", 64, "probes"), ".0f"),
    ),
    N(
        SPEED,
        r"the same command measured (\d+) ms",
        ZOO_B64_CF082BD,
        (zoo_ms("2conv-jnp", 64, "probes"), ".0f"),
    ),
    N(
        SPEED,
        r"the\s+cone route, chosen, took (\d+) ms",
        ZOO_B64,
        (zoo_ms("2conv-jnp", 64, "cone"), ".0f"),
    ),
    N(
        SPEED,
        r"The other (\d+) full-size networks \(the",
        ZOO_FULL64_REST,
        (zoo_route_networks, INT),
    ),
    N(SPEED, r"timed at (\d+) after it", ZOO_FULL64_REST, (zoo_first_batch, INT)),
    N(SPEED, r"resnet8,qnetwork`,\s+([\d.]+) minutes", ZOO_FULL64_REST, MINUTES),
    N(
        SPEED,
        r"b64_rest_cpu\.md\)\):\s+the chosen route took at most ([\d.]+) times",
        ZOO_FULL64_REST,
        ("route_check/worst_chosen_vs_fastest", F2),
    ),
    N(
        SPEED,
        r"the predicted times were off by at\s+most ([\d.]+) times, the one off",
        ZOO_FULL64_REST,
        ("route_check/worst_prediction", F2),
    ),
    N(
        SPEED,
        r"not chosen \((\d+ s a call measured, \d+) s predicted\)",
        ZOO_FULL64_REST,
        (zoo_ms("qnetwork", 64, "probes"), ".0f", 1e-3),
        (zoo_ms("qnetwork", 64, "probes", "predicted_s"), ".0f", 1e-3),
    ),
    N(SPEED, r"load average ([\d.]+ → [\d.]+) from start to end", ZOO, *LOAD_AT_START_AND_END),
    N(SPEED, r"runs on\s+a batch of (\d+) images; the naive route", ZOO, ("config/batch", INT)),
    zoo_row("2conv-linen", ".1f", ".2f", ".0f"),
    zoo_row("2conv-nnx", ".1f", ".2f", ".0f"),
    zoo_row("2conv-equinox", ".1f", ".2f", ".0f"),
    zoo_row("2conv-haiku", ".1f", ".2f", ".0f"),
    zoo_row("2conv-jnp", ".1f", ".2f", ".0f"),
    zoo_row("2conv-jnp-deadcode", ".1f", ".2f", ".0f"),
    zoo_row("mlp", ".0f", ".0f", ".2f"),
    zoo_row("resnet8", ".2f", ".3f", ".0f"),
    zoo_row("qnetwork", ".2f", ".3f", ".0f"),
    N(
        SPEED,
        r"at ([\d.]+–[\d.]+)× the naive route in this run",
        ZOO,
        (lambda d: zoo_speedups(d, min), F1),
        (lambda d: zoo_speedups(d, max), F1),
    ),
    N(
        SPEED,
        r"load average ([\d.]+ at the start\s+and [\d.]+) at the end",
        CPU,
        *LOAD_AT_START_AND_END,
    ),
    N(
        SPEED,
        r"^(\| 1 \| [\d.]+ img/s .*)$",
        CPU,
        ("config/batches", INT),
        ("cases/naive@1/images_per_s", F1),
        ("cases/insens@1/images_per_s", F1),
        ("ratios/1/insens_vs_naive_speed", F1),
        (lambda d: per_image(d, "naive@1"), ".0f", MiB),
        (lambda d: per_image(d, "insens@1"), F1, MiB),
        ("cases/naive@1/rss_peak_delta_bytes_per_image", ".0f", MiB),
        ("cases/insens@1/rss_peak_delta_bytes_per_image", ".0f", MiB),
    ),
    N(
        SPEED,
        r"^(\| 64 \| [\d.]+ img/s .*)$",
        CPU,
        ("config/batches", INT),
        ("cases/naive@64/images_per_s", F1),
        ("cases/insens@64/images_per_s", F1),
        ("ratios/64/insens_vs_naive_speed", ".0f"),
        (lambda d: per_image(d, "naive@64"), F1, MiB),
        (lambda d: per_image(d, "insens@64"), F2, MiB),
        ("ratios/64/insens_vs_naive_xla_temp_bytes_per_image", F1, PCT),
        ("cases/naive@64/rss_peak_delta_bytes_per_image", ".0f", MiB),
        ("cases/insens@64/rss_peak_delta_bytes_per_image", F1, MiB),
        ("ratios/64/insens_vs_naive_rss_peak_delta_bytes_per_image", F1, PCT),
    ),
    N(
        SPEED,
        r"^(\| 1024 \| does not fit .*)$",
        CPU,
        ("config/batches", INT),
        (lambda d: 1024 * per_image(d, "naive@64"), ".0f", GiB),
        ("config/batches", INT),
        (lambda d: per_image(d, "naive@64"), F1, MiB),
        ("cases/insens@1024/images_per_s", F1),
        (lambda d: per_image(d, "insens@1024"), F2, MiB),
        ("cases/insens@1024/rss_peak_delta_bytes_per_image", F2, MiB),
    ),
    N(
        SPEED,
        r"from the naive route in float64 by ([\d.e-]+) of",
        CPU,
        ("exactness/rel_err_x64_insens", E1),
    ),
    N(SPEED, r"On the same (\d+) images the maps", CPU, ("exactness/images", INT)),
    N(
        SPEED,
        r"their largest value \(the float32 naive route itself: ([\d.e-]+)\)",
        CPU,
        ("exactness/rel_err_x64_naive", E1),
    ),
    N(
        SPEED,
        r"computes Insens for all ([\d,]+) test images in about (\d+) minutes",
        NOISE,
        ("insens_all/num_images", ",d"),
    ),
    N(SPEED, r"test images in about (\d+) minutes", NOISE, ("insens_all/seconds", ".0f", 1 / 60)),
    N(SPEED, r"\(([\d.]+) s in the run recorded", NOISE, ("insens_all/seconds", F1)),
    N(SPEED, r"(\d+)-pixel outline", NOISE, ("config/outline_radius", INT)),
    N(
        SPEED,
        r"outline: ([\d.]+ ± [\d.]+)\)",
        NOISE,
        *mean_std("insens_all/share_on_digit_outline", F3),
    ),
    N(
        SPEED,
        r"runs at\s+([\d.]+k / [\d.]+k img/s at batch \d+ / \d+)",
        CPU,
        *each_batch((64, 1024), "cases/forward@{b}/images_per_s", F1, 1e-3),
        ("config/batches", INT),
        ("config/batches", INT),
    ),
    N(
        SPEED,
        r"the naive route to ([\d.e-]+ \(maps of size about [\d.e-]+)\)",
        CPU,
        ("exactness/max_abs_diff", E1),
        ("exactness/max_abs_naive", E1),
    ),
    # --- Insens speed: Q-network ---------------------------------------------------------------
    N(
        SPEED,
        r"takes ([\d.]+) s per image \(median of (\d+) runs, ([\d.]+)–([\d.]+) s; ([\d.]+) GiB",
        QN,
        ("cases/naive@1/median_s", F1),
    ),
    N(
        SPEED,
        r"s per image \(median of (\d+ runs, [\d.]+–[\d.]+) s; ([\d.]+) GiB",
        QN,
        ("config/repeats", INT),
        (lambda d: min(d["cases"]["naive@1"]["runs_s"]), F1),
        (lambda d: max(d["cases"]["naive@1"]["runs_s"]), F1),
    ),
    N(
        SPEED,
        r"; ([\d.]+) GiB of XLA\s+temporaries per image\), `slp.insens`",
        QN,
        (lambda d: per_image(d, "naive@1"), F2, GiB),
    ),
    N(
        SPEED,
        r"`slp.insens` ([\d.]+ img/s at batch \d+ and [\d.]+ img/s at batch \d+ "
        r"\([\d.]+ /\s+[\d.]+) MiB",
        QN,
        ("cases/insens@1/images_per_s", F1),
        ("config/batches", INT),
        ("cases/insens@8/images_per_s", F1),
        ("config/batches", INT),
        *each_batch((1, 8), "cases/insens@{b}/xla_temp_bytes_per_image", F1, MiB),
    ),
    N(
        SPEED,
        r"max \|difference\| to the naive route ([\d.e-]+ \(maps of size [\d.e-]+)\)",
        QN,
        ("exactness/max_abs_diff", E1),
        ("exactness/max_abs_naive", E1),
    ),
    N(
        SPEED,
        r"runs at ([\d.]+ / [\d.]+) img/s\.",
        QNP,
        *each_batch((1, 8), "cases/insens@{b}/images_per_s", F1),
    ),
    # --- Insens speed: ResNet-8 ----------------------------------------------------------------
    N(
        SPEED,
        r"naive\s+route ([\d.]+ / [\d.]+ img/s at batch \d+ / \d+ \([\d.]+ GiB / [\d.]+) GiB",
        RN,
        *each_batch((1, 8), "cases/naive@{b}/images_per_s", F2),
        ("config/batches", INT),
        ("config/batches", INT),
        *each_batch((1, 8), "cases/naive@{b}/xla_temp_bytes_per_image", F2, GiB),
    ),
    N(
        SPEED,
        r"\(cone route\) ([\d.]+ / [\d.]+\s+img/s \([\d.]+× / [\d.]+×; [\d.]+ / [\d.]+) MiB",
        RN,
        *each_batch((1, 8), "cases/insens@{b}/images_per_s", F1),
        *each_batch((1, 8), "ratios/{b}/insens_vs_naive_speed", F1),
        (lambda d: per_image(d, "insens@1"), ".0f", MiB),
        (lambda d: per_image(d, "insens@8"), F1, MiB),
    ),
    N(
        SPEED,
        r"the probe\s+route ([\d.]+ / [\d.]+) img/s",
        RNP,
        *each_batch((1, 8), "cases/insens@{b}/images_per_s", F1),
    ),
    N(
        SPEED,
        r"On (\d+) images: relative error vs the\s+naive route",
        RN,
        ("exactness/images", INT),
    ),
    N(
        SPEED,
        r"naive route in float64 ([\d.e-]+ \(the float32 naive route\s+itself: [\d.e-]+)\)",
        RN,
        ("exactness/rel_err_x64_insens", E1),
        ("exactness/rel_err_x64_naive", E1),
    ),
    # --- Insens speed: H100 --------------------------------------------------------------------
    N(SPEED, r"\(jax ([\d.]+),", GPU, ("run2/machine/jax_version", "s")),
    N(
        SPEED,
        r"over (\d+)\s+images \(the float32 naive route itself: ([\d.e-]+)\)",
        GPU,
        ("run2/exactness/images", INT),
    ),
    N(
        SPEED,
        r"over \d+\s+images \(the float32 naive route itself: ([\d.e-]+)\)",
        GPU,
        ("run2/exactness/rel_err_x64_naive", E1),
    ),
    N(
        SPEED,
        r"^(\| 1 \| naive `jax.jacfwd` route \|.*)$",
        GPU,
        ("run1/config/batches", INT),
        ("run1/cases/naive@1/images_per_s", ",.0f"),
    ),
    N(
        SPEED,
        r"^(\| 1 \| `slp.insens` \|.*)$",
        GPU,
        ("run1/config/batches", INT),
        ("run1/cases/insens@1/images_per_s", ",.0f"),
    ),
    N(
        SPEED,
        r"^(\| 64 \| naive `jax.jacfwd` route \(.*)$",
        GPU,
        ("run2/config/batches", INT),
        (lambda d: d["run2"]["cases"]["naive@64"]["xla_temp_bytes_per_image"], ".0f", MiB),
        ("run2/cases/naive@64/images_per_s", ",.0f"),
        ("run2/exactness/rel_err_x64_naive", E1),
    ),
    N(
        SPEED,
        r"^(\| 64 \| `slp.insens` \(.*)$",
        GPU,
        ("run2/config/batches", INT),
        (lambda d: d["run2"]["cases"]["insens@64"]["xla_temp_bytes_per_image"], F2, MiB),
        ("run2/cases/insens@64/images_per_s", ",.0f"),
        ("run2/ratios/64/insens_vs_naive_speed", F1),
        ("run2/exactness/rel_err_x64_insens", E1),
    ),
    *(
        N(
            SPEED,
            rf"^(\| {b} \| `slp.insens` \(default: float32 products\).*)$",
            GPU,
            ("run2/config/batches", INT),
            (f"run2/cases/insens@{b}/images_per_s", ",.0f"),
            ("run2/exactness/rel_err_x64_insens", E1),
        )
        for b in (1024, 8192)
    ),
    *(
        N(
            SPEED,
            rf"^(\| 1024 / 8192 \| `precision=\"{p}\"`.*)$",
            GPU,
            ("run2/config/batches", INT),
            ("run2/config/batches", INT),
            *each_batch((1024, 8192), f"run2/cases/insens:{p}@{{b}}/images_per_s", ",.0f"),
            (f"run2/exactness/rel_err_x64_insens_{p}", E1),
        )
        for p in ("tf32x3", "bf16x6", "bf16x9")
    ),
    N(
        SPEED,
        r"^(\| 1024 / 8192 \| `precision=\"default\"`.*)$",
        GPU,
        ("run1/config/batches", INT),
        ("run1/config/batches", INT),
        *each_batch((1024, 8192), "run1/cases/insens:default@{b}/images_per_s", ",.0f"),
        ("run1/exactness/rel_err_x64_insens_default", E1),
    ),
    N(
        SPEED,
        r"^(\| 1024 / 8192 \| forward pass .*)$",
        GPU,
        ("run2/config/batches", INT),
        ("run2/config/batches", INT),
        *each_batch((1024, 8192), "run2/cases/forward@{b}/images_per_s", F1, 1e-6),
    ),
    N(
        SPEED,
        r"exact route does ([\d.]+)k img/s",
        GPU,
        ("run2/cases/insens@8192/images_per_s", F1, 1e-3),
    ),
    N(
        SPEED,
        r"split operands give ([\d.]+)k img/s\n\(`tf32x3`\) and ([\d.]+)k",
        GPU,
        ("run2/cases/insens:tf32x3@8192/images_per_s", F1, 1e-3),
    ),
    N(
        SPEED,
        r"\(`tf32x3`\) and ([\d.]+)k \(`bf16x6`\)",
        GPU,
        ("run2/cases/insens:bf16x6@8192/images_per_s", F1, 1e-3),
    ),
    N(
        SPEED,
        r"with errors of ([\d.e-]+ and [\d.e-]+ against the float32\s+route's [\d.e-]+);",
        GPU,
        ("run2/exactness/rel_err_x64_insens_tf32x3", E1),
        ("run2/exactness/rel_err_x64_insens_bf16x6", E1),
        ("run2/exactness/rel_err_x64_insens", E1),
    ),
    N(
        SPEED,
        r"TF32 gives ([\d.]+k img/s at [\d.e-]+)\.",
        GPU,
        ("run1/cases/insens:default@8192/images_per_s", F1, 1e-3),
        ("run1/exactness/rel_err_x64_insens_default", E1),
    ),
    N(
        SPEED,
        r"keep float32-level error \(([\d.e-]+, [\d.e-]+)\)",
        GPU,
        ("run1/exactness/rel_err_x64_insens_TF32_TF32_F32_X3", E1),
        ("run1/exactness/rel_err_x64_insens_BF16_BF16_F32_X6", E1),
    ),
    N(
        SPEED,
        r"ran at only ([\d.]+–[\d.]+)k",
        GPU,
        (lambda d: min(split_operand_speeds(d)), F1, 1e-3),
        (lambda d: max(split_operand_speeds(d)), F1, 1e-3),
    ),
    N(
        SPEED,
        r"ran at ([\d.]+–[\d.]+k with [\d.e-]+) error",
        GPU,
        *each_batch((1024, 8192), "run1/cases/insens:BF16_BF16_F32_X9@{b}/images_per_s", F1, 1e-3),
        ("run1/exactness/rel_err_x64_insens_BF16_BF16_F32_X9", E1),
    ),
    N(SPEED, r"At batch (\d+) the GPU", GPU, ("run1/config/batches", INT)),
    # --- Whole data sets on several devices ---------------------------------------------------
    N(
        DATASET,
        r"full-size 2CONV with random weights, (\d+ MNIST test images, batches of \d+, median "
        r"of \d+) interleaved rounds",
        BENCH_DATASET,
        ("config/num_images", INT),
        ("config/batch_size", INT),
        ("config/repeats", INT),
    ),
    N(DATASET, r"The (\d+) devices are fake", BENCH_DATASET, ("config/local_devices", INT)),
    N(
        DATASET,
        r"load average ([\d.]+ at the start, [\d.]+) at the end",
        BENCH_DATASET,
        ("config/load_average/start/0", F2),
        ("config/load_average/end/0", F2),
    ),
    N(
        DATASET,
        r"^(\| method \| plain loop \|.*)$",
        BENCH_DATASET,
        *[(dataset_result("insens", c, "devices"), INT) for c in DATASET_CONFIGS],
    ),
    dataset_row("insens"),
    dataset_row("gradient"),
    N(
        DATASET,
        r"nothing computed\) took ([\d.]+) s",
        BENCH_DATASET,
        (dataset_result("insens", "devices=1, out", "seconds_of_a_call_with_every_chunk_done"), F2),
    ),
    # --- Limitations ---------------------------------------------------------------------------
    N(
        LIM,
        r"\(rank correlation (1\.00) with the trained map; rank (\d+)\s+of (\d+) at that step",
        METRICS,
        (f"{RAND}/insens/Dense_1/spearman/mean", F2),
    ),
    N(
        LIM,
        r"with the trained map; rank (\d+\s+of \d+) at that step",
        METRICS,
        (rank_of(RAND, "Dense_1/spearman_abs", False), INT),
        (n_methods, INT),
    ),
    N(
        LIM,
        r"rank correlation of (0\.\d+) with the\s+trained network's \|Insens\| \((\d+) digits\)",
        METRICS,
        (f"{RAND}/insens/Conv_0/spearman_abs/mean", F3),
    ),
    N(
        LIM,
        r"trained network's \|Insens\| \((\d+) digits\)",
        METRICS,
        (f"{RAND}/insens/Conv_0/spearman_abs/n", INT),
    ),
    N(
        LIM,
        r"the signed map drops to (0\.\d+)\.",
        METRICS,
        (f"{RAND}/insens/Conv_0/spearman/mean", F2),
    ),
    N(
        LIM,
        r"\|map\| (0\.\d+), signed (0\.\d+) \((\d+) images;",
        "cifar10.json",
        (f"{RAND}/insens/Conv_0/spearman_abs/mean", F2),
    ),
    N(
        LIM,
        r"\|map\| 0\.\d+, signed (0\.\d+ \(\d+) images;",
        "cifar10.json",
        (f"{RAND}/insens/Conv_0/spearman/mean", F2),
        (f"{RAND}/insens/Conv_0/spearman/n", INT),
    ),
    N(
        LIM,
        r"only (0\.\d+) of \|Insens\| lies on the objects",
        "pong.json",
        ("methods/insens/object_mass_share", F3),
    ),
    N(
        LIM,
        r"hardly more than the (0\.\d+) of the frame's pixels",
        "pong.json",
        ("state/object_pixel_share", F3),
    ),
    N(
        LIM,
        r"guided\s+backprop puts (0\.\d+) of its map there",
        "pong.json",
        ("methods/guided_backprop/object_mass_share", F3),
    ),
    N(LIM, r"LRP α2β1 (0\.\d+)\.", "pong.json", ("methods/lrp_alpha2_beta1/object_mass_share", F3)),
    N(
        LIM,
        r"the agent's first\s+(\d+) steps where",
        "pong.json",
        (lambda d: int(d["state"]["selection"].split("first ")[1].split()[0]), INT),
    ),
    *(
        N(LIM, rf"{label} \((0\.\d+)\)", "pong.json", (f"methods/{m}/object_mass_share", F3))
        for label, m in (
            (r"on the same state gradient\s+", "gradient"),
            ("gradient × input", "gradient_x_input"),
            ("integrated gradients", "integrated_gradients"),
            ("SmoothGrad", "smoothgrad"),
            ("DeconvNet", "deconvnet"),
        )
    ),
    N(LIM, r"random weights over (\d+) seeds", LATTICE, ("config/seeds", INT)),
    N(LIM, r'A rank "k of (\d+)" below', METRICS, (n_methods, INT)),
    N(LIM, r"orders the means of (\d+) methods", METRICS, (n_methods, INT)),
    N(
        LIM,
        r"a pattern repeating every (\d+ pixels explains 0\.\d+) of",
        LATTICE,
        ("networks/stride4/lattice_period", INT),
        ("networks/stride4/periodic_share/4/mean", F3),
    ),
    N(
        LIM,
        r"one repeating every (\d+ or \d+ pixels 0\.\d+ or 0\.\d+);",
        LATTICE,
        *((f"networks/stride{s}/first_conv_stride", INT) for s in (3, 5)),
        ("networks/stride4/periodic_share/3/mean", F3),
        ("networks/stride4/periodic_share/5/mean", F3),
    ),
    N(
        LIM,
        r"set the stride to\s+(\d+ or \d+ and the period follows \(0\.\d+ at \d+, 0\.\d+ at \d+)\)",
        LATTICE,
        ("networks/stride3/first_conv_stride", INT),
        ("networks/stride5/first_conv_stride", INT),
        ("networks/stride3/periodic_share/3/mean", F3),
        ("networks/stride3/lattice_period", INT),
        ("networks/stride5/periodic_share/5/mean", F3),
        ("networks/stride5/lattice_period", INT),
    ),
    N(
        LIM,
        r"holds (0\.\d+) of all inactive neurons",
        LATTICE,
        ("networks/stride4/layers/conv1/inactive_share/mean", F3),
    ),
    N(
        LIM,
        r"put only (0\.\d+ of \|Insens\| on that frame's objects \(0\.\d+) of",
        LATTICE,
        ("networks/stride4/object_mass_share/mean", F3),
        ("input/object_pixel_share", F3),
    ),
    N(
        LIM,
        r"(Over \d+ networks ×\s+\d+ test images) \(\[results/cifar10_evaluation",
        CEVAL,
        (lambda d: len(d["seeds"]), INT),
        ("config/num_images", INT),
    ),
    N(
        LIM,
        r"deletion area (0\.\d+ \(.*?\) against 0\.\d+\s+\(.*?\)) for random",
        CEVAL,
        *method_ci("Deletion", "insens", not_in_top_group),
        *interval("metrics/Deletion/controls/random"),
    ),
    N(
        LIM,
        r"Inserting them gives (0\.\d+\s+\(.*?\), above random's 0\.\d+ \(.*?\)) but",
        CEVAL,
        *method_ci("Insertion", "insens", not_in_top_group),
        *interval("metrics/Insertion/controls/random"),
    ),
    N(
        LIM,
        r"top group's \(bounded Deep\s+Taylor (0\.\d+ \(.*?\))\)\. ROAD",
        CEVAL,
        *method_ci("Insertion", "deep_taylor_bounded", best_of),
    ),
    N(
        LIM,
        r"survives (0\.\d+ \(.*?\)) of the removals",
        CEVAL,
        *method_ci("ROAD-MoRF", "insens", not_in_top_group),
    ),
    N(
        LIM,
        r"(0\.\d+\s+\(.*?\)) for a blurred random order",
        CEVAL,
        *interval("metrics/ROAD-MoRF/controls/blurred_random"),
    ),
    N(
        LIM,
        r"Deletion AUC (0\.\d+\s+against 0\.\d+) for random, but rank",
        METRICS,
        (f"{FAITH}/insens/signed/deletion/auc_probability/mean", F3),
        (f"{FAITH}/random/deletion/auc_probability/mean", F3),
    ),
    N(
        LIM,
        r"for random, but (rank \d+ of \d+; insertion rank \d+ of \d+) \(signed order",
        METRICS,
        (rank_of(FAITH, "signed/deletion/auc_probability", False), INT),
        (n_methods, INT),
        (rank_of(FAITH, "signed/insertion/auc_probability", True), INT),
        (n_methods, INT),
    ),
    N(
        LIM,
        r"Localisation: (\d+th of \d+)\.",
        METRICS,
        (rank_of(ROB, "clean/on_digit", True), INT),
        (n_methods, INT),
    ),
    N(
        LIM,
        r"On clean MNIST digits (0\.\d+) of \|Insens\|",
        METRICS,
        (f"{ROB}/insens/clean/on_digit/mean", F3),
    ),
    N(LIM, r"and its outline \((\d+) digits; ", METRICS, (f"{ROB}/insens/clean/on_digit/n", INT)),
    N(
        LIM,
        r"digits; (0\.\d+ over all [\d,]+) test digits",
        NOISE,
        ("insens_all/share_on_digit_outline/mean", F3),
        ("insens_all/num_images", ",d"),
    ),
    N(
        LIM,
        r"\), (rank \d+ of \d+)\. Maps that",
        METRICS,
        (rank_of(ROB, "clean/on_digit", True), INT),
        (n_methods, INT),
    ),
    N(
        LIM,
        r"score\s+(1\.000) there by construction",
        METRICS,
        (lambda d: min(d[ROB][m]["clean"]["on_digit"]["mean"] for m in INPUT_MULTIPLES), F3),
    ),
    N(
        LIM,
        r"background and framed noise \((\d+) networks,",
        EVAL,
        (lambda d: len(d["seeds"]) if not sweep_top_group_count("insens")(d) else "in one", INT),
    ),
    N(
        LIM,
        r"noise \((\d+ networks; at σ 0\.\d+ Insens 0\.\d+ \(.*?\), bounded Deep Taylor"
        r" 0\.\d+\s+\(.*?\));",
        CEVAL,
        (lambda d: len(d["seeds"]) if not sweep_top_group_count("insens")(d) else "in one", INT),
        ("config/sigmas/1", "g"),
        *method_ci("Robustness-gaussian-0.1", "insens", not_in_top_group),
        *method_ci("Robustness-gaussian-0.1", "deep_taylor_bounded", best_of),
    ),
)


def placed_cifar(d, name: str, place: int):
    scores = {m: v["spearman"] for m, v in d["robustness"].items()}
    r = rank(scores, name, True)
    return scores[name]["mean"] if r == place else f"{name} ranks {r}, not {place}"
