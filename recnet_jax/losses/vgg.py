"""Frozen VGG16 features up to relu4_3 (torchvision ``vgg16().features[:23]``) for the ECR, NHWC.

The weights are held in :class:`VGGWeight` variables, not ``nnx.Param``: an ``nnx.Optimizer(..., wrt=nnx.Param)``
never sees them, and the forward pass wraps them in ``stop_gradient``, so no gradient reaches them even
when the module is passed through ``jax.grad``. Inputs go in as they are: no ImageNet mean/std
normalisation (the release does not normalise).

Loading (:func:`load_vgg16`) accepts a torchvision checkpoint (``.pth``, read with torch), a ``.npz``, or a
mapping of the ``features`` keys; files are read by :mod:`recnet_jax.torch_io`. Convert a torchvision file
once on a machine that has torch, so that training machines need none::

  python -m recnet_jax.convert vgg16 vgg16-397923af.pth --out vgg16_features.npz
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from recnet_jax import torch_io

# torchvision indices of the convs in features[:23], their (in, out) channels, and the convs followed by
# a 2x2 max pool (torchvision indices 4, 9, 16).
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)
VGG16_CONV_CHANNELS = (
    (3, 64),
    (64, 64),
    (64, 128),
    (128, 128),
    (128, 256),
    (256, 256),
    (256, 256),
    (256, 512),
    (512, 512),
    (512, 512),
)
_POOL_AFTER = frozenset({2, 7, 14})
# Keys of a full torchvision VGG16 state dict that lie beyond relu4_3: accepted and ignored.
_BEYOND_RELU4_3 = frozenset(f"{i}.{p}" for i in (24, 26, 28) for p in ("weight", "bias"))
_CLASSIFIER = re.compile(r"^classifier\.\d+\.(weight|bias)$")
_PREFIXES = ("features.", "vgg/")

CONVERTER_COMMAND = "python -m recnet_jax.convert vgg16 PATH.pth --out PATH.npz"


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """The 20 torchvision keys of ``features[:23]`` (without prefix) and their PyTorch (OIHW) shapes."""
    shapes = {}
    for idx, (cin, cout) in zip(VGG16_CONV_INDICES, VGG16_CONV_CHANNELS):
        shapes[f"{idx}.weight"] = (cout, cin, 3, 3)
        shapes[f"{idx}.bias"] = (cout,)
    return shapes


class VGGWeight(nnx.Variable):
    """A frozen VGG16 tensor. Not an ``nnx.Param``: optimizers built with ``wrt=nnx.Param`` skip it."""


class VGG16Features(nnx.Module):
    """VGG16 ``features[:23]``: ten 3x3 convs (zero pad 1, bias) + ReLU, 2x2/2 max pools after conv 2, 4, 7.

    Call: ``[N, H, W, 3]`` -> ``[N, H // 8, W // 8, 512]`` (relu4_3; each pool floors), float32 (float64 for
    float64 inputs under x64; lower-precision inputs are promoted to float32).

    Attributes:
      kernels: ten HWIO kernels ``[3, 3, in, out]`` (:class:`VGGWeight`).
      biases: ten ``[out]`` biases (:class:`VGGWeight`).
      precision: ``lax.Precision`` name for the convs ('HIGHEST' by default: true float32), or None for the
        global default (``jax_default_matmul_precision``), which on GPUs may mean TF32 convs, as PyTorch's
        cuDNN default does. The ECR's inter-region term is ill-conditioned: with TF32 VGG convs it moved by
        5.8e-5 relative on the loss fixture (H100), against 3e-7 at 'HIGHEST'.
    """

    def __init__(self, kernels: Sequence[Any], biases: Sequence[Any], *, precision: str | None = "HIGHEST"):
        """Builds the module from HWIO kernels and biases (see :func:`load_vgg16` for checkpoints).

        Args:
          kernels: ten arrays ``[3, 3, in, out]`` in the order of ``VGG16_CONV_CHANNELS``.
          biases: ten arrays ``[out]``.
          precision: None, or one of 'DEFAULT', 'HIGH', 'HIGHEST'.
        """
        if len(kernels) != 10 or len(biases) != 10:
            raise ValueError(
                f"VGG16Features needs 10 kernels and 10 biases, got {len(kernels)} and {len(biases)}"
            )
        bad = []
        for i, ((cin, cout), k, b) in enumerate(zip(VGG16_CONV_CHANNELS, kernels, biases)):
            if tuple(np.shape(k)) != (3, 3, cin, cout):
                bad.append(f"kernel {i}: {tuple(np.shape(k))} != {(3, 3, cin, cout)}")
            if tuple(np.shape(b)) != (cout,):
                bad.append(f"bias {i}: {tuple(np.shape(b))} != {(cout,)}")
        if bad:
            raise ValueError("VGG16Features: mis-shaped HWIO tensors: " + "; ".join(bad))
        if precision is not None and precision not in ("DEFAULT", "HIGH", "HIGHEST"):
            raise ValueError(
                f"VGG16Features precision must be None, 'DEFAULT', 'HIGH' or 'HIGHEST', got {precision!r}"
            )
        self.kernels = nnx.List([VGGWeight(jnp.asarray(k, jnp.float32)) for k in kernels])
        self.biases = nnx.List([VGGWeight(jnp.asarray(b, jnp.float32)) for b in biases])
        self.precision = precision

    @classmethod
    def random(cls, seed: int = 0, *, precision: str | None = "HIGHEST") -> "VGG16Features":
        """He-initialised features, as torchvision initialises VGG: N(0, 2 / (out * 9)) kernels, zero biases.

        For demos and tests only; the ECR is meant to run on ImageNet-trained weights.
        """
        rng = np.random.default_rng(seed)
        kernels, biases = [], []
        for cin, cout in VGG16_CONV_CHANNELS:
            std = np.sqrt(2.0 / (cout * 9))
            kernels.append(
                (rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * std).astype(np.float32)
            )
            biases.append(np.zeros((cout,), np.float32))
        return cls(kernels, biases, precision=precision)

    def __call__(self, x: jax.Array) -> jax.Array:
        """relu4_3 features of ``x`` ``[N, H, W, 3]`` -> ``[N, H // 8, W // 8, 512]``; no weight gradients."""
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"VGG16Features expects NHWC RGB [N, H, W, 3], got shape {x.shape}")
        precision = None if self.precision is None else lax.Precision[self.precision]
        dtype = jnp.promote_types(x.dtype, jnp.float32)  # float32, or float64 under x64
        h = x.astype(dtype)
        for idx, k, b in zip(VGG16_CONV_INDICES, self.kernels, self.biases):
            k = lax.stop_gradient(k[...]).astype(dtype)
            b = lax.stop_gradient(b[...]).astype(dtype)
            h = lax.conv_general_dilated(
                h,
                k,
                (1, 1),
                ((1, 1), (1, 1)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                precision=precision,
            )
            h = jax.nn.relu(h + b)
            if idx in _POOL_AFTER:
                h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        return h

    def to_torchvision(self) -> dict[str, np.ndarray]:
        """The weights as torchvision ``features`` keys (``features.0.weight`` ...), OIHW float32 numpy."""
        out = {}
        for idx, k, b in zip(VGG16_CONV_INDICES, self.kernels, self.biases):
            out[f"features.{idx}.weight"] = np.asarray(k[...]).transpose(3, 2, 0, 1)
            out[f"features.{idx}.bias"] = np.asarray(b[...])
        return out


def _read_file(path: pathlib.Path) -> Mapping[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"VGG16 weights file {path} does not exist")
    try:
        return torch_io.read_tensors(path, what="a torchvision VGG16 state_dict")
    except ImportError as e:
        raise ImportError(f"{e}; then: {CONVERTER_COMMAND}, and load the .npz") from e


def _torch_key_map(source: Mapping[str, Any], origin: str) -> dict[str, np.ndarray]:
    """Validates ``source`` and returns ``{'0.weight': OIHW array, ...}`` (20 entries)."""
    shapes = expected_shapes()
    found: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    unknown, duplicate, misshaped = [], [], []
    for key, value in source.items():
        name = str(key)
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        if name in _BEYOND_RELU4_3 or _CLASSIFIER.match(str(key)):
            continue
        if name not in shapes:
            unknown.append(str(key))
            continue
        if name in seen:
            duplicate.append(str(key))
            continue
        seen.add(name)
        arr = torch_io.to_numpy(value)
        if arr.shape != shapes[name]:
            misshaped.append(f"{key}: {arr.shape}, expected {shapes[name]}")
            continue
        found[name] = arr
    missing = [k for k in shapes if k not in seen]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}")
    if duplicate:
        problems.append(f"keys given twice (with and without a prefix) {duplicate}")
    if misshaped:
        problems.append(f"mis-shaped tensors [{'; '.join(misshaped)}]")
    if problems:
        raise ValueError(
            f"{origin} is not a VGG16 features[:23] state dict: "
            + "; ".join(problems)
            + ". Expected torchvision keys 0.weight ... 21.bias (OIHW), optionally prefixed 'features.' or "
            "'vgg/'; classifier.* and features.24-28 are ignored."
        )
    return found


def load_vgg16(
    source: str | os.PathLike | Mapping[str, Any], *, precision: str | None = "HIGHEST"
) -> VGG16Features:
    """Loads VGG16 ``features[:23]`` weights in torchvision format into :class:`VGG16Features`.

    Args:
      source: a torchvision checkpoint path (``.pth``/``.pt``, read with torch; a full ``vgg16`` state dict
        is fine, ``classifier.*`` and ``features.24``-``28`` are ignored), a ``.npz`` (e.g. written by the
        converter CLI), or a mapping ``{key: array or tensor}`` with keys ``0.weight`` ... ``21.bias``,
        optionally prefixed ``features.`` or ``vgg/``. Weights are OIHW, as PyTorch stores them.
      precision: conv precision of the module (see :class:`VGG16Features`).
    Returns:
      the frozen module.
    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: unsupported suffix, or missing, unknown, duplicated or mis-shaped keys (all listed in one
        message).
      ImportError: a ``.pth`` without torch installed (the message gives the converter command).
    """
    if isinstance(source, Mapping):
        origin, mapping = "the VGG16 weight mapping", source
    else:
        path = pathlib.Path(source)
        origin, mapping = f"VGG16 weights file {path}", _read_file(path)
    found = _torch_key_map(mapping, origin)
    kernels = [found[f"{i}.weight"].transpose(2, 3, 1, 0) for i in VGG16_CONV_INDICES]
    biases = [found[f"{i}.bias"] for i in VGG16_CONV_INDICES]
    return VGG16Features(kernels, biases, precision=precision)


def save_vgg16_npz(vgg: VGG16Features, path: str | os.PathLike) -> pathlib.Path:
    """Writes ``vgg`` as a ``.npz`` of torchvision keys ``features.<i>.weight/bias`` (OIHW float32)."""
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"--out {path}: the converter writes a .npz file; give a path ending in .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **vgg.to_torchvision())
    return path
