"""grain input pipelines over the TFDS ArrayRecord datasets (no TensorFlow at read time).

Training (:func:`train_dataset` / :func:`train_iterator`)::

    tfds.data_source(name, split=tfds.split_for_jax_process(split, ...))   # one data shard
      -> grain.MapDataset.source -> .seed(seed).shuffle() -> .repeat(num_epochs)
      -> .random_map(PairedCropFlip(crop_size))   # release pre-processing, see below
      -> .batch(batch_size, drop_remainder=True) -> .to_iter_dataset(ReadOptions(num_threads))

Per example, as the released RECNet loader does: resize input and target to
``(ceil(H/4)*4, ceil(W/4)*4)`` with bilinear interpolation and half-pixel centres (OpenCV
``INTER_LINEAR``; identity when H and W are already multiples of 4), take a ``crop_size`` crop at
the same place in both, then flip horizontally, flip vertically and rotate by 180 degrees, each
with p = 0.5, independently and in that order. Only the crop window is interpolated, which gives
the same pixels as resizing the whole image first.

**Train batch** (a dict of numpy arrays; ``B`` = per-host ``batch_size``, ``C`` = ``crop_size``):

* ``input``: [B, C, C, 3] float32 in [0, 1], RGB.
* ``target``: [B, C, C, 3] float32 in [0, 1], RGB.
* ``name``: [B] str, example names.
* ``exposure``: [B] str, exposure labels (``""`` where the dataset has none).

The pipeline is deterministic given ``seed`` (and the process index/count): the order is a
seeded shuffle, new every epoch; each example's crop and flips come from an rng derived from
``seed`` and the example's global position. The iterator's state (``it.get_state()`` /
``it.set_state(state)``, or ``grain.checkpoint.CheckpointSave(it)`` in an orbax Composite) restores
the exact next batch.

**Eval example** (:func:`eval_dataset`, batch of one, in a fixed order):

* ``input``, ``target``: [1, H4, W4, 3] float32 in [0, 1], resized up to multiples of 4 (above).
* ``name``: [1] str; ``exposure``: [1] str (MSEC ``N1.5``/``N1``/``0``/``P1``/``P1.5``, SICE
  ``low``/``over``, LCDP and synthetic ``mixed``); ``size``: [1, 2] int32, the stored (H, W).

Multi-host: pass ``process_index``/``process_count`` (default: ``jax.process_index()`` /
``jax.process_count()``); ``batch_size`` is per host. Build global arrays with
``jax.make_array_from_process_local_data``. Training reads the split as ``num_shards`` data shards
(``tfds.split_for_jax_process`` with ``process_count=num_shards``, the remainder dropped so that the
shards are equally long), each shuffled and augmented on its own; host ``p`` of ``P`` reads shards
``p * S/P .. (p + 1) * S/P - 1`` and its batch is theirs concatenated in shard order, so the global
batch is every shard's rows in shard order. ``num_shards=None`` (the default) means one shard per
host: each host reads only its own TFDS split. A fixed ``num_shards`` makes the sequence of global
batches independent of the host count: 1 host with ``num_shards=2`` reads exactly the global
batches of 2 hosts, and a checkpointed iterator position means the same batches on any host count
that divides ``num_shards``. Eval datasets are split per host (no example dropped).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Sequence

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

# Importing the builders registers their TFDS names, so that "msec" resolves to its default
# config ("msec/expert_c") in any process. They import no TensorFlow.
from recnet_jax.data import lcdp, msec, paired, sice, synthetic  # noqa: F401

DEFAULT_CROP = 384
MULTIPLE = 4
TRAIN_KEYS = ("input", "target", "name", "exposure")


# ---- resizing (bilinear, half-pixel centres, OpenCV INTER_LINEAR semantics) --------------------

def bilinear_taps(in_size: int, out_size: int, start: int = 0,
                  length: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source taps of output positions ``start .. start+length-1`` of a 1-D bilinear resize.

    Half-pixel centres: output ``i`` samples input coordinate ``(i + 0.5) * in/out - 0.5``,
    clamped to ``[0, in_size - 1]`` (OpenCV ``INTER_LINEAR``'s border handling).

    Returns:
      ``(i0, i1, w)``, each [length]: ``out[i] = (1 - w) * x[i0] + w * x[i1]``.
    """
    length = out_size - start if length is None else length
    pos = (np.arange(start, start + length, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    pos = np.clip(pos, 0.0, in_size - 1)
    i0 = np.floor(pos).astype(np.intp)
    w = (pos - i0).astype(np.float32)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, w


def padded_size(h: int, w: int, multiple: int = MULTIPLE) -> tuple[int, int]:
    """``(ceil(h / multiple) * multiple, ceil(w / multiple) * multiple)``."""
    return math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple


def resize_window(image: np.ndarray, out_hw: tuple[int, int], top: int = 0, left: int = 0,
                  size: tuple[int, int] | None = None) -> np.ndarray:
    """Window ``[top:top+sh, left:left+sw]`` of ``image`` bilinearly resized to ``out_hw``.

    Args:
      image: [H, W, C] uint8 (0..255) or float.
      out_hw: the full resized size (H', W').
      top, left, size: the window of the resized image to compute (default: all of it).

    Returns:
      [sh, sw, C] float32 in [0, 1] for uint8 input (scaled by 1/255), else in the input's range.
      Exact copy (no interpolation) when ``out_hw == image.shape[:2]``.
    """
    h, w = image.shape[:2]
    sh, sw = size if size is not None else (out_hw[0] - top, out_hw[1] - left)
    x = image
    for axis, (n_in, n_out, start, length) in enumerate(((h, out_hw[0], top, sh),
                                                         (w, out_hw[1], left, sw))):
        if n_in == n_out:  # identity along this axis: just the window
            x = x[top:top + sh] if axis == 0 else x[:, left:left + sw]
            continue
        i0, i1, wt = bilinear_taps(n_in, n_out, start, length)
        lo = int(i0[0])
        x = x[lo:int(i1[-1]) + 1] if axis == 0 else x[:, lo:int(i1[-1]) + 1]  # rows/cols needed
        a = np.take(x, i0 - lo, axis=axis).astype(np.float32)
        b = np.take(x, i1 - lo, axis=axis).astype(np.float32)
        wt = wt[:, None, None] if axis == 0 else wt[None, :, None]
        x = a + wt * (b - a)
    if image.dtype != np.uint8:
        return x.astype(np.float32)
    x = x.astype(np.float32) / np.float32(255.0)
    if (h, w) != tuple(out_hw):
        np.clip(x, 0.0, 1.0, out=x)  # interpolation rounding must not step outside [0, 1]
    return x


def resize_to_multiple(image: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    """[H, W, C] uint8 -> [ceil(H/m)*m, ceil(W/m)*m, C] float32 in [0, 1] (the release's resize)."""
    return resize_window(image, padded_size(*image.shape[:2], multiple))


# ---- transforms -----------------------------------------------------------------------------

def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


class PairedCropFlip(grain.transforms.RandomMap):
    """Resize to multiples of 4, random crop at the same place in input and target, random flips.

    Maps a TFDS example (``input``/``target`` [H, W, 3] uint8, ``name``, ``exposure``) to
    ``input``/``target`` [C, C, 3] float32 in [0, 1], ``name`` and ``exposure`` as str.
    """

    def __init__(self, crop_size: int = DEFAULT_CROP, multiple: int = MULTIPLE):
        self.crop_size = crop_size
        self.multiple = multiple

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        inp, tgt = element["input"], element["target"]
        name = _text(element.get("name", b""))
        if inp.shape != tgt.shape:
            raise ValueError(f"example {name!r}: input {inp.shape} and target {tgt.shape} differ; "
                             "rebuild the dataset (the builders check this)")
        h, w = inp.shape[:2]
        hp, wp = padded_size(h, w, self.multiple)
        c = self.crop_size
        if hp < c or wp < c:
            raise ValueError(f"example {name!r} is {h}x{w} (HxW), smaller than the crop {c}; rebuild "
                             f"with --min_size {c} (plus --skip_bad to drop such images) or use a "
                             "smaller crop")
        top = int(rng.integers(0, hp - c + 1))
        left = int(rng.integers(0, wp - c + 1))
        hflip, vflip, rot180 = (rng.random(3) < 0.5)
        out = []
        for img in (inp, tgt):
            x = resize_window(img, (hp, wp), top, left, (c, c))
            if hflip:
                x = x[:, ::-1]
            if vflip:
                x = x[::-1]
            if rot180:
                x = x[::-1, ::-1]
            out.append(np.ascontiguousarray(x))
        return {"input": out[0], "target": out[1], "name": name,
                "exposure": _text(element.get("exposure", b""))}


class ToEvalExample(grain.transforms.Map):
    """TFDS example -> eval example with a batch dimension of 1 (see module docstring)."""

    def __init__(self, multiple: int = MULTIPLE):
        self.multiple = multiple

    def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
        h, w = element["input"].shape[:2]
        return {"input": resize_to_multiple(element["input"], self.multiple)[None],
                "target": resize_to_multiple(element["target"], self.multiple)[None],
                "name": np.asarray([_text(element.get("name", b""))]),
                "exposure": np.asarray([_text(element.get("exposure", b""))]),
                "size": np.asarray([[h, w]], np.int32)}


def stack_batch(examples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Stack per-example dicts into a batch dict (strings become [B] numpy str arrays)."""
    return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


# ---- datasets ---------------------------------------------------------------------------------

def open_source(name: str, data_dir: str, split: str, *, process_index: int | None = None,
                process_count: int | None = None, drop_remainder: bool = False):
    """This host's ``tfds.data_source`` of ``split`` (sharded with ``tfds.split_for_jax_process``).

    Raises:
      FileNotFoundError: the dataset is not built in ``data_dir`` (the message says how to build it).
    """
    host_split = split
    if process_count is None or process_count > 1:
        host_split = tfds.split_for_jax_process(split, process_index=process_index,
                                                process_count=process_count,
                                                drop_remainder=drop_remainder)
    base_name = name.split("/")[0]
    how = (f"build it with `python -m recnet_jax.data.build --dataset {base_name} --manual_dir DIR "
           f"--data_dir {data_dir}`")
    if not (pathlib.Path(data_dir) / base_name).is_dir():
        raise FileNotFoundError(f"dataset {name!r} not found in {data_dir}; {how}")
    try:
        return tfds.data_source(name, split=host_split, data_dir=str(data_dir), download=False)
    except (tfds.core.registered.DatasetNotFoundError, NotImplementedError, AssertionError,
            FileNotFoundError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise FileNotFoundError(f"dataset {name!r} (split {split}) not found or incomplete in "
                                f"{data_dir}; {how} ({type(e).__name__}: {first})") from None


def shard_seed(seed: int, shard: int) -> int:
    """The shuffle and augmentation seed of data shard ``shard`` (shard 0: ``seed`` itself), so
    that the shards' rows of one batch get independent orders, crops and flips."""
    if shard == 0:
        return seed
    return int(np.random.SeedSequence([seed, shard]).generate_state(1, np.uint32)[0])


def host_shards(num_shards: int | None, batch_size: int, process_index: int | None = None,
                process_count: int | None = None) -> tuple[list[int], int, int]:
    """This host's data shards: ``(shard indices, num_shards, rows per shard in a host batch)``.

    Raises:
      ValueError: ``num_shards`` is not a multiple of the host count, or the host batch does not
        split evenly over this host's shards (the message names ``config.data.num_shards``).
    """
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    shards = num_shards or process_count
    if shards % process_count:
        raise ValueError(f"config.data.num_shards={shards} must be a multiple of the number of "
                         f"processes ({process_count}); use {process_count * max(1, round(shards / process_count))} "
                         "or 0 (one shard per process)")
    per_host = shards // process_count
    if batch_size % per_host:
        raise ValueError(f"the per-process batch {batch_size} does not split over the "
                         f"{per_host} data shards of each process (config.data.num_shards={shards} "
                         f"over {process_count} process(es)); make the global batch a multiple of "
                         "config.data.num_shards")
    first = process_index * per_host
    return list(range(first, first + per_host)), shards, batch_size // per_host


def _concat_rows(batches: tuple[dict[str, np.ndarray], ...]) -> dict[str, np.ndarray]:
    if len(batches) == 1:
        return batches[0]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def train_dataset(name: str, data_dir: str, *, batch_size: int, crop_size: int = DEFAULT_CROP,
                  split: str = "train", seed: int = 0, num_epochs: int | None = None,
                  shuffle: bool = True, process_index: int | None = None,
                  process_count: int | None = None,
                  num_shards: int | None = None) -> grain.MapDataset:
    """The training MapDataset (random access; see the module docstring for its batches).

    Args:
      name: TFDS name (``synthetic``, ``msec``, ``msec/expert_a``, ``sice``, ``lcdp``, ``paired``).
      data_dir: the folder the dataset was built into.
      batch_size: per-host batch size; incomplete batches are dropped.
      crop_size: square crop side C.
      split: TFDS split (slicing like ``"train[:90%]"`` works).
      seed: shuffle and augmentation seed.
      num_epochs: None repeats forever.
      shuffle: reshuffle every epoch.
      process_index, process_count: this host and the number of hosts (default: from JAX).
      num_shards: the number of data shards (a multiple of the host count); None or 0: one per
        host. See the module docstring.

    Returns:
      ``grain.MapDataset`` of batch dicts.
    """
    shards, count, rows = host_shards(num_shards, batch_size, process_index, process_count)
    parts = []
    for shard in shards:
        src = open_source(name, data_dir, split, process_index=shard, process_count=count,
                          drop_remainder=True)
        if len(src) < rows:
            where = "on this host" if count == 1 else f"in data shard {shard} of {count}"
            raise ValueError(f"{name} {split} has {len(src)} examples {where}, fewer than "
                             f"the {rows} rows it gives each batch")
        ds = grain.MapDataset.source(src).seed(shard_seed(seed, shard))
        if shuffle:
            ds = ds.shuffle()
        ds = ds.repeat(num_epochs)
        ds = ds.random_map(PairedCropFlip(crop_size))
        parts.append(ds.batch(rows, drop_remainder=True, batch_fn=stack_batch))
    if len(parts) == 1:
        return parts[0]
    return grain.experimental.ZipMapDataset(parts).map(_concat_rows)


def to_iterator(ds: grain.MapDataset, *, num_threads: int = 2, prefetch_buffer_size: int = 8,
                num_workers: int = 0) -> grain.DatasetIterator:
    """A checkpointable iterator over ``ds`` (``get_state()``/``set_state()``).

    Args:
      num_threads: grain read threads (on few cores, threads beat processes).
      prefetch_buffer_size: elements read ahead by the threads.
      num_workers: > 0 adds ``mp_prefetch`` with that many worker processes (needs the main module
        guarded by ``if __name__ == "__main__"`` and parsed absl flags).
    """
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                 prefetch_buffer_size=prefetch_buffer_size))
    if num_workers > 0:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(it_ds)


def train_iterator(name: str, data_dir: str, *, batch_size: int, crop_size: int = DEFAULT_CROP,
                   seed: int = 0, num_threads: int = 2, num_workers: int = 0,
                   **kwargs: Any) -> grain.DatasetIterator:
    """``to_iterator(train_dataset(...))``: what a training loop calls. ``kwargs`` go to
    :func:`train_dataset` (``split``, ``num_epochs``, ``process_index``, ``process_count``,
    ``num_shards``...)."""
    ds = train_dataset(name, data_dir, batch_size=batch_size, crop_size=crop_size, seed=seed, **kwargs)
    return to_iterator(ds, num_threads=num_threads, num_workers=num_workers,
                       prefetch_buffer_size=max(2, 2 * num_threads))


def eval_dataset(name: str, data_dir: str, *, split: str = "test", multiple: int = MULTIPLE,
                 process_index: int | None = None, process_count: int | None = None) -> grain.MapDataset:
    """Full-image eval examples in a fixed order (batch of 1; module docstring for the fields).

    Iterate with ``for ex in eval_dataset(...)`` or index it (``len(ds)``, ``ds[i]``). On several
    hosts each host gets its shard (no example dropped; shard sizes may differ by one).
    """
    src = open_source(name, data_dir, split, process_index=process_index,
                      process_count=process_count, drop_remainder=False)
    return grain.MapDataset.source(src).map(ToEvalExample(multiple))
