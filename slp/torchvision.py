"""torchvision ``state_dict`` <-> parameters of `slp.models.VGG16` and `slp.models.ResNet50`.

A user with torchvision's pretrained ImageNet weights (``torch.save(model.state_dict(),
path)``) gets the same logits from slp's models::

    model = slp.models.VGG16()
    variables = slp.torchvision.convert(model, "vgg16.pth")
    logits = model.apply(variables, x_BHWC)  # x in NHWC, normalised as for torchvision

torch is imported only to read a saved file; a dict of NumPy arrays (or of tensors)
works without it. Layouts: conv kernels OIHW -> HWIO, dense weights (out, in) -> (in, out),
VGG-16's first dense layer additionally from torch's channel-first flattening (C, 7, 7)
to slp's channel-last one (7, 7, C); batch norm ``weight``/``bias`` -> ``scale``/``bias``
(``params``), ``running_mean``/``running_var`` -> ``mean``/``var`` (``batch_stats``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from slp import models

__all__ = ["convert", "to_state_dict"]

_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_IGNORED_SUFFIX = ".num_batches_tracked"


def _template(model: nn.Module) -> dict:
    if not isinstance(model, (models.VGG16, models.ResNet50)):
        raise TypeError(
            f"convert takes slp.models.VGG16 or slp.models.ResNet50; got {type(model).__name__}"
        )
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def _entries(model: nn.Module):
    """``(flax path, torch key, flax shape)`` for every leaf of the model's variables."""
    flat = jax.tree_util.tree_flatten_with_path(_template(model))[0]
    for path, leaf in flat:
        names = [p.key for p in path]
        collection, modules, leaf_name = names[0], names[1:-1], names[-1]
        torch_leaf = _LEAF_TO_TORCH[(collection, leaf_name)]
        key = ".".join(m.replace("_", ".") for m in modules) + "." + torch_leaf
        yield tuple(names), key, tuple(leaf.shape)


def _to_flax(key: str, w: np.ndarray, flax_shape: tuple, vgg: bool) -> np.ndarray:
    """A torch tensor in slp's layout (see the module docstring)."""
    if w.ndim == 4:
        return w.transpose(2, 3, 1, 0)
    if w.ndim == 2:
        if vgg and key == "classifier.0.weight":
            n_out, n_in = w.shape
            c = flax_shape[0] // 49
            if n_in != 49 * c:
                return w.T  # wrong size: reported by the shape check
            return w.reshape(n_out, c, 7, 7).transpose(2, 3, 1, 0).reshape(n_in, n_out)
        return w.T
    return w


def _to_torch(key: str, w: np.ndarray, vgg: bool) -> np.ndarray:
    """Inverse of `_to_flax`."""
    if w.ndim == 4:
        return w.transpose(3, 2, 0, 1)
    if w.ndim == 2:
        if vgg and key == "classifier.0.weight":
            n_in, n_out = w.shape
            c = n_in // 49
            return w.reshape(7, 7, c, n_out).transpose(3, 2, 0, 1).reshape(n_out, n_in)
        return w.T
    return w


def _torch_shape(flax_shape: tuple) -> tuple:
    if len(flax_shape) == 4:
        h, w, i, o = flax_shape
        return (o, i, h, w)
    if len(flax_shape) == 2:
        return flax_shape[::-1]
    return flax_shape


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def convert(model: nn.Module, state_dict: Mapping[str, Any] | str | os.PathLike) -> dict:
    """Variables of ``model`` (`slp.models.VGG16` or `slp.models.ResNet50`) from torchvision.

    The ``state_dict`` is that of ``torchvision.models.vgg16`` / ``resnet50``.

    Args:
      model: the slp model; its ``num_classes`` must match the state_dict's classifier.
      state_dict: a mapping from torchvision's keys to tensors or arrays, or the path of
        a file saved by ``torch.save(model.state_dict(), path)`` (read with torch,
        ``weights_only=True``).

    Returns:
      ``{"params": ...}`` (VGG-16) or ``{"params": ..., "batch_stats": ...}``
      (ResNet-50), float32, for ``model.apply``.

    Raises:
      KeyError: a key the model needs is missing (the message names it), or the
        state_dict has keys the model does not use (named too).
      ValueError: a tensor has the wrong shape (the message names the key, the shape
        found and the shape expected).

    Examples:
      With torchvision's pretrained weights saved by ``torch.save(net.state_dict(), path)``
      (not run here: it needs the file):

      >>> model = slp.models.VGG16()
      >>> variables = slp.torchvision.convert(model, "vgg16.pth")  # doctest: +SKIP
      >>> f = slp.models.as_single_example(model, variables)  # doctest: +SKIP

      A state_dict that is not torchvision's VGG-16 is refused, naming what it lacks:

      >>> slp.torchvision.convert(slp.models.VGG16(num_classes=10), {})
      Traceback (most recent call last):
      ...
      KeyError: "the state_dict has no 'classifier.0.bias' (needed for ...)..."
    """
    if isinstance(state_dict, (str, os.PathLike)):
        import torch  # only to read the file

        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    vgg = isinstance(model, models.VGG16)
    out: dict = {}
    used = set()
    for names, key, shape in _entries(model):
        if key not in state_dict:
            raise KeyError(
                f"the state_dict has no {key!r} (needed for {'/'.join(names)}); is it "
                f"torchvision's {'vgg16' if vgg else 'resnet50'}?"
            )
        w = _as_numpy(state_dict[key])
        want = _torch_shape(shape)
        if tuple(w.shape) != want:
            raise ValueError(
                f"state_dict[{key!r}] has shape {tuple(w.shape)}; {type(model).__name__}"
                f"(num_classes={model.num_classes}) expects {want}"
            )
        used.add(key)
        node = out
        for n in names[:-1]:
            node = node.setdefault(n, {})
        node[names[-1]] = jnp.asarray(_to_flax(key, w, shape, vgg))
    extra = sorted(k for k in state_dict if k not in used and not k.endswith(_IGNORED_SUFFIX))
    if extra:
        raise KeyError(
            f"the state_dict has keys that {type(model).__name__} does not use: "
            f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}"
        )
    return out


def to_state_dict(model: nn.Module, variables: Mapping) -> dict[str, np.ndarray]:
    """The torchvision ``state_dict`` of ``model``'s ``variables``: the inverse of `convert`.

    Args:
      model: `slp.models.VGG16` or `slp.models.ResNet50`.
      variables: its variables, as `convert` returns them.

    Returns:
      ``{torchvision key: NumPy array}``; ``torch.from_numpy`` each to load it with
      ``load_state_dict(..., strict=False)``, which skips ``num_batches_tracked``.

    Examples:
      >>> model = slp.models.VGG16()
      >>> variables = slp.torchvision.convert(model, "vgg16.pth")  # doctest: +SKIP
      >>> state_dict = slp.torchvision.to_state_dict(model, variables)  # doctest: +SKIP
      >>> state_dict["features.0.weight"].shape  # doctest: +SKIP
      (64, 3, 3, 3)
    """
    vgg = isinstance(model, models.VGG16)
    out = {}
    for names, key, _ in _entries(model):
        node = variables
        for n in names:
            node = node[n]
        out[key] = np.ascontiguousarray(_to_torch(key, np.asarray(node, np.float32), vgg))
    return out
