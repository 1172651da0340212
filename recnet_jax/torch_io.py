"""Reading and writing weight files: the one place that reads or writes ``.pth`` files (the PyTorch
twin, recnet_jax.torch_twin, is the only other module that imports torch).

    tensors = torch_io.read_tensors("recnet.pth", what="an official RECNet state_dict")
    torch_io.write_tensors({"extract.weight": array, ...}, "recnet.pth")

``read_tensors`` reads ``.pth``/``.pt``/``.bin`` (PyTorch, ``torch.load(weights_only=True)``) and
``.npz`` into ``{key: np.ndarray}``, unwrapping a ``state_dict``/``params``/``model`` entry when the
file holds a training checkpoint. Anything that is not such a file (empty, truncated, a text file
named ``.pth``, a pickle of other objects, a zip of something else) raises a one-line
:class:`WeightsFileError` (a ``ValueError``) naming the file and what was expected, never the
unpickler's traceback. torch is imported only when a PyTorch file is read or written, so ``.npz``
needs nothing beyond numpy.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

PTH_SUFFIXES = (".pth", ".pt", ".bin")
NPZ_SUFFIXES = (".npz",)
TORCH_HINT = "pip install -r requirements-torch.txt (torch==2.13.0, CPU build)"
_WRAPPERS = ("state_dict", "params", "model")


class WeightsFileError(ValueError):
    """A file that is not the weights file it was supposed to be; ``str(err)`` is one line."""


def _import_torch(path: str, action: str):
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError(f"{action} {path} needs torch: {TORCH_HINT}; or convert it to .npz once on "
                          "a machine that has torch (python -m recnet_jax.convert --help)") from e
    return torch


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _read_pth(path: str, what: str) -> Mapping[str, Any]:
    torch = _import_torch(path, "reading")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError, KeyError,
            AttributeError, TypeError, IndexError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise WeightsFileError(f"{path}: not a PyTorch checkpoint that holds {what} (torch.load "
                               f"failed: {_first_line(e)[:200]}); is the file complete and really "
                               "a .pth?") from None
    for key in _WRAPPERS:
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise WeightsFileError(f"{path}: expected {what} (a mapping of names to tensors), found a "
                               f"{type(obj).__name__}")
    return obj


def _read_npz(path: str, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise ValueError("a single array, not an archive of named arrays")
            return {k: f[k] for k in f.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise WeightsFileError(f"{path}: not an .npz archive that holds {what} "
                               f"({_first_line(e)[:200]})") from None


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any device/dtype) or array-like -> float32 numpy."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def read_tensors(path: str | os.PathLike, *, what: str = "a state_dict") -> dict[str, np.ndarray]:
    """Reads a weights file into ``{key: float32 np.ndarray}``.

    Args:
      path: ``.pth``/``.pt``/``.bin`` (needs torch) or ``.npz``.
      what: what the caller expects, for the error message (e.g. "an official RECNet state_dict").
    Returns:
      every tensor-valued entry; other entries (an epoch counter in a PyTorch mapping, a string
      array in an .npz) are dropped.
    Raises:
      FileNotFoundError: no such file.
      WeightsFileError: an unknown suffix, or a file that is not a checkpoint (one line).
      ImportError: a PyTorch file without torch installed (the message says how to install it).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file at {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in NPZ_SUFFIXES:
        raw: Mapping[str, Any] = _read_npz(path, what)
    elif suffix in PTH_SUFFIXES:
        raw = _read_pth(path, what)
    else:
        raise WeightsFileError(f"{path}: unsupported suffix {suffix!r}; expected {what} as a "
                               f"PyTorch {'/'.join(PTH_SUFFIXES)} or an .npz file")
    out = {}
    for key, value in raw.items():
        numeric = isinstance(value, np.ndarray) and (np.issubdtype(value.dtype, np.number)
                                                     or value.dtype == bool)
        if hasattr(value, "detach") or numeric:
            out[str(key)] = to_numpy(value)
    return out


def write_tensors(tensors: Mapping[str, np.ndarray], path: str | os.PathLike) -> str:
    """Writes ``tensors`` atomically as ``.npz`` (always) or ``.pth``/``.pt`` (needs torch), in order."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in NPZ_SUFFIXES + (".pth", ".pt"):
        raise ValueError(f"{path}: weights are written as .npz, or .pth/.pt with torch")
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        if suffix in NPZ_SUFFIXES:
            with open(tmp, "wb") as f:
                np.savez(f, **{k: np.asarray(v) for k, v in tensors.items()})
        else:
            torch = _import_torch(path, "writing")
            from collections import OrderedDict  # pylint: disable=import-outside-toplevel
            torch.save(OrderedDict((k, torch.from_numpy(np.array(v, dtype=np.float32)))
                                   for k, v in tensors.items()), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
