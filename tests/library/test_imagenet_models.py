"""VGG-16 and ResNet-50 against torchvision on the same random weights, and the converter.

The torchvision models get random weights, and their batch norms random running statistics
and affine parameters (torchvision initialises them to the identity, which would hide a
wrong mapping); `slp.torchvision.convert` loads the state_dict, and both give the same
logits on the same input to float32 rounding. The round trip and the error messages need
no torch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slp import models
from slp import torchvision as slp_tv

# float32 on both sides, different summation orders: relative to the largest logit.
RTOL = 2e-5


def _randomise_bn(net, torch):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.4 * torch.rand(n, generator=gen) - 0.2)


@pytest.fixture(scope="module")
def torch_pair():
    torch = pytest.importorskip("torch")
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    out = {}
    for name, make, ours in (
        ("vgg16", tvm.vgg16, models.VGG16(num_classes=10)),
        ("resnet50", tvm.resnet50, models.ResNet50(num_classes=10)),
    ):
        net = make(num_classes=10).eval()
        _randomise_bn(net, torch)
        out[name] = (net, ours, slp_tv.convert(ours, net.state_dict()))
    return torch, out


def _logits_both(torch, net, ours, variables, side, seed=0):
    x = np.random.default_rng(seed).normal(size=(2, side, side, 3)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    got = np.asarray(jax.jit(ours.apply)(variables, x))
    return got, ref


@pytest.mark.crosscheck
@pytest.mark.parametrize(
    "name, side, seed",
    [
        ("vgg16", 32, 0),  # 1x1 features, repeated to 7x7 by the adaptive pooling
        ("vgg16", 64, 0),  # 2x2 -> 7x7: the general averaging matrix
        ("vgg16", 112, 0),  # 3x3 -> 7x7
        ("resnet50", 64, 0),
        ("resnet50", 50, 0),  # odd sides through every stride
        ("vgg16", 224, 1),  # the ImageNet size: 7x7 features, no resampling
        ("resnet50", 224, 1),
    ],
)
@pytest.mark.slow
def test_same_logits_as_torchvision(torch_pair, name, side, seed):
    torch, nets = torch_pair
    got, ref = _logits_both(torch, *nets[name], side, seed=seed)
    assert np.abs(ref).max() > 1e-3  # a real signal, not two zero vectors
    np.testing.assert_allclose(got, ref, rtol=0, atol=RTOL * np.abs(ref).max())


@pytest.mark.crosscheck
@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
@pytest.mark.slow
def test_state_dict_round_trip_through_torch(torch_pair, name):
    torch, nets = torch_pair
    net, ours, variables = nets[name]
    back = slp_tv.to_state_dict(ours, variables)
    sd = net.state_dict()
    assert set(back) == {k for k in sd if not k.endswith("num_batches_tracked")}
    for k, v in back.items():
        np.testing.assert_array_equal(v, sd[k].numpy(), err_msg=k)


def _random_variables(model, seed=0):
    """Random variables of the model's shapes (NumPy: far cheaper than ``model.init``)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.random(s.shape, dtype=np.float32), shapes)


def _small_resnet():
    # One bottleneck per stage: the same names and layouts as ResNet-50, cheap to build.
    return models.ResNet50(num_classes=7, blocks=(1, 1, 1, 1))


def test_round_trip_without_torch():
    # VGG-16's round trip is checked against torch's own state_dict above.
    model = _small_resnet()
    variables = _random_variables(model)
    sd = slp_tv.to_state_dict(model, variables)
    back = slp_tv.convert(model, sd)
    flat_a = jax.tree_util.tree_leaves_with_path(variables)
    flat_b = dict(jax.tree_util.tree_leaves_with_path(back))
    assert len(flat_a) == len(flat_b)
    for path, leaf in flat_a:
        np.testing.assert_array_equal(np.asarray(flat_b[path]), np.asarray(leaf))


@pytest.mark.slow
def test_vgg_first_dense_reads_torch_channel_first_order():
    # torch row c*49 + h*7 + w is slp row (h*7 + w)*512 + c (written out, one entry).
    model = models.VGG16(num_classes=5)
    sd = slp_tv.to_state_dict(model, _random_variables(model))
    w = np.zeros_like(sd["classifier.0.weight"])
    c, h, wi, out = 17, 3, 5, 11
    w[out, c * 49 + h * 7 + wi] = 1.0
    sd["classifier.0.weight"] = w
    kernel = np.asarray(slp_tv.convert(model, sd)["params"]["classifier_0"]["kernel"])
    assert kernel[(h * 7 + wi) * 512 + c, out] == 1.0 and kernel.sum() == 1.0


@pytest.fixture(scope="module")
def small_resnet_sd():
    model = _small_resnet()
    return model, slp_tv.to_state_dict(model, _random_variables(model))


def test_missing_key_is_named(small_resnet_sd):
    model, sd = small_resnet_sd
    sd = dict(sd)
    del sd["layer2.0.bn2.running_var"]
    with pytest.raises(KeyError, match=r"layer2\.0\.bn2\.running_var"):
        slp_tv.convert(model, sd)


def test_wrong_shape_is_named(small_resnet_sd):
    model, sd = small_resnet_sd
    sd = dict(sd)
    sd["layer3.0.conv2.weight"] = np.zeros((256, 256, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"layer3\.0\.conv2\.weight.*\(256, 256, 1, 1\)"):
        slp_tv.convert(model, sd)


def test_wrong_num_classes_names_fc(small_resnet_sd):
    _, sd = small_resnet_sd
    with pytest.raises(ValueError, match=r"fc\.(weight|bias).*num_classes=1000"):
        slp_tv.convert(models.ResNet50(blocks=(1, 1, 1, 1)), sd)


def test_unexpected_key_is_named(small_resnet_sd):
    model, sd = small_resnet_sd
    sd = dict(sd, **{"layer5.0.conv1.weight": np.zeros(3, np.float32)})
    sd["bn1.num_batches_tracked"] = np.zeros((), np.float32)  # torch's counter: ignored
    with pytest.raises(KeyError, match=r"layer5\.0\.conv1\.weight"):
        slp_tv.convert(model, sd)


def test_not_a_torchvision_model():
    with pytest.raises(TypeError, match="VGG16 or slp.models.ResNet50"):
        slp_tv.convert(models.TwoConv(), {})


@pytest.mark.parametrize("model", [models.VGG16(), models.ResNet50()])
def test_channel_first_input_is_refused(model):
    with pytest.raises(ValueError, match=r"NHWC.*transpose"):
        model.init(jax.random.key(0), jnp.zeros((1, 3, 32, 32)))


def test_adaptive_avg_pool_matches_torch_definition():
    # Cells floor(i H / 7) .. ceil((i + 1) H / 7) - 1, written out: identity, repeats,
    # tiled pooling and the general averaging matrix.
    rng = np.random.default_rng(0)
    for side in (1, 2, 3, 7, 10, 14):
        x = rng.normal(size=(1, side, side, 2)).astype(np.float32)
        got = np.asarray(models.adaptive_avg_pool(jnp.asarray(x), (7, 7)))
        want = np.zeros((1, 7, 7, 2), np.float32)
        for i in range(7):
            for j in range(7):
                r0, r1 = (i * side) // 7, -(-((i + 1) * side) // 7)
                c0, c1 = (j * side) // 7, -(-((j + 1) * side) // 7)
                want[0, i, j] = x[0, r0:r1, c0:c1].mean(axis=(0, 1))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"side {side}")
