"""One place that turns what a user points at into a RECNet: enhance, evaluate and the trainer share it.

    model, source = weights.load("runs/demo")            # (RECNet, a one-line description)

Accepted (:func:`resolve`):

* a training workdir: its ``model/`` export (written at the end of training);
* a ``model/`` export, or any model checkpoint of :func:`recnet_jax.checkpointing.save_model`
  (``python -m recnet_jax.convert to-jax`` writes one);
* an official PyTorch ``.pth``/``.pt`` (needs torch) or an ``.npz`` of the official state_dict,
  converted on the fly with :func:`recnet_jax.convert.from_official`;
* a ``results.json`` that names the weights in its ``checkpoint`` field (``make demo`` writes
  ``runs/demo/results.json``), or a folder holding one.
"""

from __future__ import annotations

import json
import os

from recnet_jax import checkpointing, convert, torch_io

ACCEPTED = ("a training workdir (with a model/ export), a model/ export, an official .pth/.pt or "
            ".npz state_dict, or a results.json with a 'checkpoint' field")
OFFICIAL_SUFFIXES = torch_io.PTH_SUFFIXES + torch_io.NPZ_SUFFIXES


def _is_export(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "params")) and os.path.exists(os.path.join(path, "config"))


def _from_results_json(path: str, seen: tuple[str, ...]) -> tuple[str, str]:
    try:
        with open(path) as f:
            field = json.load(f).get("checkpoint")
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"--checkpoint {path}: not a JSON object with a 'checkpoint' field "
                         f"({type(e).__name__}: {e})") from None
    if not isinstance(field, str) or not field:
        raise ValueError(f"--checkpoint {path}: the JSON file has no 'checkpoint' field naming the "
                         "weights")
    candidates = [field] if os.path.isabs(field) else [os.path.join(os.path.dirname(path), field),
                                                       field]
    for c in candidates:
        if os.path.exists(c):
            return resolve(c, _seen=seen + (path,))
    raise FileNotFoundError(f"--checkpoint {path} names the weights {field!r}, which do not exist")


def resolve(path: str | os.PathLike, *, _seen: tuple[str, ...] = ()) -> tuple[str, str]:
    """Finds the weights behind ``path``.

    Returns:
      (kind, path): kind 'export' (a model checkpoint directory) or 'official' (a .pth/.npz file).
    Raises:
      FileNotFoundError / ValueError naming ``path`` and what is accepted.
    """
    path = os.path.abspath(os.fspath(path))
    if path in _seen:
        raise ValueError(f"--checkpoint: {path} refers to itself through 'checkpoint' fields")
    if not os.path.exists(path):
        raise FileNotFoundError(f"--checkpoint {path}: no such file or folder; expected {ACCEPTED}")
    if os.path.isfile(path):
        suffix = os.path.splitext(path)[1].lower()
        if suffix in OFFICIAL_SUFFIXES:
            return "official", path
        if suffix == ".json":
            return _from_results_json(path, _seen)
        raise ValueError(f"--checkpoint {path}: unknown kind of file; expected {ACCEPTED}")
    if _is_export(path):
        return "export", path
    model_dir = os.path.join(path, "model")
    if _is_export(model_dir):
        return "export", model_dir
    if os.path.isfile(os.path.join(path, "results.json")):
        return _from_results_json(os.path.join(path, "results.json"), _seen)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        raise FileNotFoundError(f"--checkpoint {path}: a training workdir without a model/ export "
                                "(the export is written when training finishes); finish or resume "
                                "the training run, or pass an exported model")
    raise ValueError(f"--checkpoint {path}: a folder that holds no weights; expected {ACCEPTED}")


def load(path: str | os.PathLike, *, norm_variant: str | None = None, conv_impl: str = "auto",
         dtype=None):
    """Loads the RECNet behind ``path`` (see :func:`resolve`).

    Args:
      norm_variant: None keeps the checkpoint's own ('official' for .pth/.npz files, which
        reproduces the release; an export's saved variant); 'paper' or 'official' override it.
      conv_impl, dtype: as in :class:`recnet_jax.RECNet`.
    Returns:
      (model, description): description names the resolved weights, e.g. ``model export DIR``.
    """
    kind, where = resolve(path)
    if kind == "official":
        model = convert.from_official(where, norm_variant=norm_variant or "official",
                                      conv_impl=conv_impl, dtype=dtype)
        return model, f"official state_dict {where} (norm_variant={model.norm_variant})"
    model = checkpointing.load_model(where, conv_impl=conv_impl, dtype=dtype, norm_variant=norm_variant)
    return model, f"model export {where} (norm_variant={model.norm_variant})"
