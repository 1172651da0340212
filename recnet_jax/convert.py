"""Convert between the official PyTorch RECNet state_dict and the Flax NNX model.

    model = recnet_jax.convert.from_official("official.pth")   # or .npz, or {key: array}
    state_dict = recnet_jax.convert.to_official(model)           # {key: np.ndarray (OIHW)}

The official state_dict (class ``InteractNet``) has 229 keys for the default configuration. Conv
weights are OIHW and become HWIO kernels (``w.transpose(2, 3, 1, 0)``, grouped and depthwise convs
included); the blur kernels (1,1,k,k) become [k,k] without any flip; ``mssa.temperature`` (h,1,1)
becomes [h]. Loading is strict: every key is used exactly once, and missing, unknown or mis-shaped
keys are reported together in one error.

Command line (``python -m recnet_jax.convert --help``):

    # official -> JAX: an Orbax checkpoint (and/or an .npz of the official layout)
    python -m recnet_jax.convert to-jax official.pth --out ckpt_dir
    # JAX -> official: .npz always, .pth when torch is installed
    python -m recnet_jax.convert to-official ckpt_dir --out recnet.pth
    # official .pth -> .npz, so that machines without torch can read it
    python -m recnet_jax.convert to-official-npz official.pth --out recnet.npz
    # torchvision VGG16 -> the ECR loss's features[:23] .npz (config.loss.vgg_weights)
    python -m recnet_jax.convert vgg16 vgg16-397923af.pth --out vgg16.npz

Every ``.pth`` is read by :mod:`recnet_jax.torch_io`: a file that is not a checkpoint (truncated,
foreign, a text file named ``.pth``) ends in one ``error:`` line naming it, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping

import numpy as np

from recnet_jax import checkpointing, torch_io
from recnet_jax.losses import vgg as vgg_lib

_BLOCK_RE = re.compile(r"^dualprocess\.conv(\d+)\.")


def _conv(prefix: str, path: tuple, bias: bool = True) -> list[tuple[str, tuple, str]]:
    entries = [(f"{prefix}.weight", path + ("kernel",), "conv")]
    if bias:
        entries.append((f"{prefix}.bias", path + ("bias",), "same"))
    return entries


def official_layout(num_blocks: int = 5) -> list[tuple[str, tuple, str]]:
    """(official key, NNX state path, kind) for every parameter.

    kind: 'conv' (OIHW <-> HWIO), 'blur' ((1,1,k,k) <-> (k,k)), 'temperature' ((h,1,1) <-> (h,)),
    'same' (no change).
    """
    out = []
    for i in range(4):
        out += _conv(f"learned_mask.net_convs.{2 * i}", ("emp", "convs", i))
    out += _conv("extract", ("stem",))
    for k in range(num_blocks):
        p, rdm, mru = f"dualprocess.conv{k + 1}", ("blocks", k, "rdm"), ("blocks", k, "mru")
        out += [(f"{p}.norm.alpha", rdm + ("alpha",), "same"),
                (f"{p}.norm.IN.weight", rdm + ("norm_scale",), "same"),
                (f"{p}.norm.IN.bias", rdm + ("norm_bias",), "same")]
        for i in range(3):
            out += _conv(f"{p}.norm.CFR_branches.{i}", rdm + ("gates", i), bias=False)
        for i in range(3):
            out += _conv(f"{p}.norm.CFR_tails.{i}", rdm + ("tails", i), bias=False)
        out += [(f"{p}.norm.blur.kernel", rdm + ("blur_kernel",), "blur")]
        out += _conv(f"{p}.norm.fuse_1", rdm + ("fuse_under",))
        out += _conv(f"{p}.norm.fuse_2", rdm + ("fuse_over",))
        out += [(f"{p}.mssa.temperature", mru + ("temperature",), "temperature")]
        for official, ours in [("conv3x3_q", "value_dw3"), ("conv5x5_q", "value_dw5"),
                               ("project_ch", "project_ch"), ("project_in", "project_in"),
                               ("dwconv3x3", "qk_dw3"), ("dwconv5x5", "qk_dw5"),
                               ("dwconv3x3_1", "local_g3"), ("dwconv5x5_1", "local_g5"),
                               ("project_out", "project_out")]:
            out += _conv(f"{p}.mssa.{official}", mru + (ours,))
        for official, ours in [("fuse1", "fuse_local"), ("fuse2", "fuse_global"),
                               ("post.0", "post_in"), ("post.2", "post_out")]:
            out += _conv(f"{p}.{official}", mru + (ours,))
    out += _conv("dualprocess.cat", ("aggregate",))
    r = "dualprocess.refine"
    for official, ours in [("conv_in", "conv_in"), ("process.0.conv_du.0", "ca_down"),
                           ("process.0.conv_du.2", "ca_up"), ("process.0.process.0", "ca_conv1"),
                           ("process.0.process.2", "ca_conv2"), ("conv_last", "conv_last")]:
        out += _conv(f"{r}.{official}", ("refine", ours))
    return out


def _to_jax(kind: str, a: np.ndarray) -> np.ndarray:
    if kind == "conv":
        return a.transpose(2, 3, 1, 0)
    if kind == "blur":
        return a.reshape(a.shape[-2:])
    if kind == "temperature":
        return a.reshape(a.shape[0])
    return a


def _to_official(kind: str, a: np.ndarray) -> np.ndarray:
    if kind == "conv":
        return a.transpose(3, 2, 0, 1)
    if kind == "blur":
        return a.reshape((1, 1) + a.shape)
    if kind == "temperature":
        return a.reshape(a.shape[0], 1, 1)
    return a


# ----------------------------------------------------------------------------------------- reading

STATE_DICT = "an official RECNet state_dict"


def read_state_dict(source) -> dict[str, np.ndarray]:
    """Reads an official state_dict from a .pth/.pt file, an .npz file or a mapping.

    Files go through :func:`recnet_jax.torch_io.read_tensors` (a file that is not a checkpoint is a
    one-line ``ValueError`` naming it). Keys may carry a ``module.`` (DataParallel) or ``param/``
    (shared fixtures) prefix. When any key has the ``param/`` prefix, only those keys are read (the
    fixture files hold activations too). Returns {official key: float32 np.ndarray}.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no checkpoint at {path}")
        raw = torch_io.read_tensors(path, what=STATE_DICT)
    elif isinstance(source, Mapping):
        raw = dict(source)
    else:
        raise TypeError(f"source must be a path or a mapping of official keys to arrays, got "
                        f"{type(source).__name__}")
    if any(k.startswith("param/") for k in raw):
        raw = {k[len("param/"):]: v for k, v in raw.items() if k.startswith("param/")}
    out = {}
    for k, v in raw.items():
        if k == "meta_json":
            continue
        if k.startswith("module."):
            k = k[len("module."):]
        out[k] = torch_io.to_numpy(v)
    return out


def infer_config(state_dict: Mapping[str, np.ndarray]) -> dict:
    """nc, num_blocks, num_heads and blur_size from the shapes of an official state_dict."""
    if "extract.weight" not in state_dict:
        raise ValueError("not an official RECNet state_dict: it has no 'extract.weight' (the stem); "
                         f"first keys: {sorted(state_dict)[:5]}")
    blocks = {int(m.group(1)) for k in state_dict if (m := _BLOCK_RE.match(k))}
    if not blocks:
        raise ValueError("not an official RECNet state_dict: no 'dualprocess.convK.*' keys")
    num_blocks = max(blocks)
    temp = state_dict.get("dualprocess.conv1.mssa.temperature")
    blur = state_dict.get("dualprocess.conv1.norm.blur.kernel")
    return dict(nc=int(state_dict["extract.weight"].shape[0]), num_blocks=num_blocks,
                num_heads=int(temp.shape[0]) if temp is not None else 2,
                blur_size=int(blur.shape[-1]) if blur is not None else 31)


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _set(tree, path, value):
    for p in path[:-1]:
        tree = tree[p]
    tree[path[-1]] = value


# ----------------------------------------------------------------------------------------- public

def from_official(source, *, norm_variant: str = "official", conv_impl: str = "auto", dtype=None):
    """Builds a RECNet from an official checkpoint.

    Args:
      source: a ``.pth``/``.pt`` file (needs torch), an ``.npz`` file, or a mapping from official
        state_dict keys to arrays (NCHW/OIHW); keys optionally prefixed ``module.`` or ``param/``.
      norm_variant: 'official' (default: reproduces the release) or 'paper' (same parameters, the
        region-aware normalisation; does not reproduce the official outputs).
      conv_impl, dtype: as in :class:`recnet_jax.RECNet`.
    Returns:
      A :class:`recnet_jax.RECNet` with nc, num_blocks, num_heads and blur_size inferred from the
      weights.
    Raises:
      ValueError listing every missing, unknown and mis-shaped key.
    """
    import jax.numpy as jnp
    from flax import nnx

    from recnet_jax.model import RECNet

    sd = read_state_dict(source)
    cfg = infer_config(sd)

    def build():
        return RECNet(**cfg, norm_variant=norm_variant, conv_impl=conv_impl, dtype=dtype,
                      rngs=nnx.Rngs(0))

    graphdef, abstract = nnx.split(nnx.eval_shape(build))
    pure = nnx.to_pure_dict(abstract)
    layout = official_layout(cfg["num_blocks"])
    expected = {key: (path, kind) for key, path, kind in layout}
    missing = [k for k in expected if k not in sd]
    unknown = sorted(k for k in sd if k not in expected)
    misshaped = []
    for key, (path, kind) in expected.items():
        if key not in sd:
            continue
        want = _to_official(kind, np.empty(_get(pure, path).shape, np.float32)).shape
        if sd[key].shape != want:
            misshaped.append(f"{key}: got {tuple(sd[key].shape)}, expected {tuple(want)}")
    if missing or unknown or misshaped:
        parts = [f"the checkpoint does not match RECNet({', '.join(f'{k}={v}' for k, v in cfg.items())})"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {missing}")
        if unknown:
            parts.append(f"unknown keys ({len(unknown)}): {unknown}")
        if misshaped:
            parts.append(f"wrong shapes ({len(misshaped)}): {misshaped}")
        raise ValueError("\n".join(parts))
    for key, (path, kind) in expected.items():
        _set(pure, path, jnp.asarray(_to_jax(kind, sd[key])))
    nnx.replace_by_pure_dict(abstract, pure)
    return nnx.merge(graphdef, abstract)


def to_official(x) -> dict[str, np.ndarray]:
    """The official state_dict of a model (or of a params-shaped pytree such as its gradients).

    Args:
      x: a :class:`recnet_jax.RECNet`, an ``nnx.State`` of its parameters (e.g. ``nnx.grad``
        output), or the equivalent pure dict (``nnx.to_pure_dict``).
    Returns:
      {official key: float32 np.ndarray} in PyTorch layout (OIHW), in the release's key order.
    """
    from flax import nnx

    if isinstance(x, nnx.Module):
        x = nnx.state(x, nnx.Param)
    pure = nnx.to_pure_dict(x) if isinstance(x, nnx.State) else x
    num_blocks = len(pure["blocks"])
    return {key: _to_official(kind, np.asarray(_get(pure, path), dtype=np.float32))
            for key, path, kind in official_layout(num_blocks)}


def save_official(state_dict: Mapping[str, np.ndarray], path: str) -> str:
    """Writes a state_dict to ``.npz`` (always possible) or ``.pth`` (needs torch), atomically."""
    if os.path.splitext(os.fspath(path))[1].lower() not in (".npz", ".pth", ".pt"):
        raise ValueError(f"{path}: the official side is written as .npz or .pth")
    return torch_io.write_tensors(state_dict, path)


# ----------------------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recnet_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("to-jax", help="official .pth/.npz -> Orbax checkpoint (and/or .npz)")
    a.add_argument("source", help="official checkpoint: .pth/.pt (needs torch) or .npz")
    a.add_argument("--out", required=True,
                   help="an Orbax checkpoint directory, or a path ending in .npz")
    a.add_argument("--norm_variant", default="official", choices=["official", "paper"])
    b = sub.add_parser("to-official", help="Orbax checkpoint -> official .npz or .pth")
    b.add_argument("source", help="an Orbax model checkpoint written by recnet_jax")
    b.add_argument("--out", required=True, help="output file: .npz (always) or .pth (needs torch)")
    c = sub.add_parser("to-official-npz", help="official .pth -> .npz (so other machines need no torch)")
    c.add_argument("source")
    c.add_argument("--out", required=True)
    v = sub.add_parser("vgg16", help="torchvision VGG16 .pth -> the .npz of features[:23] that the "
                                     "ECR loss reads (config.loss.vgg_weights)")
    v.add_argument("source", help="torchvision vgg16 state_dict, e.g. vgg16-397923af.pth (needs torch)")
    v.add_argument("--out", required=True, help="output .npz")
    args = parser.parse_args(argv)

    record = {"command": args.command, "source": args.source}
    try:
        if args.command == "to-jax":
            model = from_official(args.source, norm_variant=args.norm_variant)
            if args.out.lower().endswith(".npz"):
                out = save_official(to_official(model), args.out)
            else:
                out = checkpointing.save_model(args.out, model)
        elif args.command == "to-official":
            model = checkpointing.load_model(args.source)
            out = save_official(to_official(model), args.out)
        elif args.command == "vgg16":
            vgg = vgg_lib.load_vgg16(args.source)
            out = str(vgg_lib.save_vgg16_npz(vgg, args.out))
            record["tensors"] = len(vgg_lib.expected_shapes())
            record["config"] = f"config.loss.vgg_weights='{out}'"
        else:
            out = save_official(read_state_dict(args.source), args.out)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({**record, "out": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
