"""Evaluation with the paper's protocol, per exposure group; the trainer's validation calls it too.

    results = evaluate.evaluate_model(model, "msec", "data_dir")          # a JSON-ready dict
    python -m recnet_jax.evaluate --config configs/msec.py --checkpoint runs/msec --out out/eval

Protocol (reference section 9, :mod:`recnet_jax.metrics`): full images resized up to multiples of
4 (input and target, as the release does), the whole image through the model, output and target
quantised to uint8, PSNR and SSIM by dm_pix on x/255 (an inf/NaN score counts as 0). Each image is
also scored as it came in (``input_psnr``/``input_ssim``: the identity baseline).

Groups (:func:`group_names`):

* MSEC: each exposure level (``N1.5``, ``N1``, ``0``, ``P1``, ``P1.5`` = -1.5 ... +1.5 EV), ``under``
  = {-1.5, -1}, ``over`` = {0, +1, +1.5} (the literature's convention) and ``all``; every mean
  is over images, so ``all`` weights the levels by their image counts, as the papers report;
* SICE: ``under`` (the ``low`` inputs), ``over`` and ``all``;
* LCDP, paired folders and synthetic data: ``all``.

Images of one size are batched together (``per_device_batch`` per device) and, with a ``mesh``,
split over its devices; the last batch of a size is padded to the device count and the padding
dropped. On several processes each one evaluates its shard of the split on its own devices and
the per-image scores are gathered to every process at the end (one process needs no collective).
Progress, with an ETA, goes to the absl log of process 0.

Results (:func:`evaluate_model`): ``{"dataset", "split", "num_images", "groups": {group: {"psnr",
"ssim", "count", "input_psnr", "input_ssim"}}, "per_image": [{"name", "exposure", "psnr",
"ssim", "input_psnr", "input_ssim"}], "samples": [...]}``; ``samples`` (the first
``num_samples`` images as uint8 ``input``, ``output``, ``target`` [H, W, 3] and ``mask`` [H, W],
on process 0) is not JSON: pop it before writing. The command line writes ``results.json`` and
``results.md`` (:func:`results_markdown`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import config_flags

from recnet_jax import inference, metrics, progress, runtime, sharding, weights
from recnet_jax.data import pipeline

MSEC_LEVELS = ("N1.5", "N1", "0", "P1", "P1.5")
MSEC_UNDER, MSEC_OVER = ("N1.5", "N1"), ("0", "P1", "P1.5")
SICE_GROUPS = {"low": "under", "over": "over"}
GROUP_TITLES = {"N1.5": "-1.5 EV", "N1": "-1 EV", "0": "0 EV", "P1": "+1 EV", "P1.5": "+1.5 EV",
                "under": "under", "over": "over", "all": "all"}
SCORES = ("psnr", "ssim", "input_psnr", "input_ssim")
# The paper's numbers, as quoted in a later paper's comparison table (not measured here):
# {dataset: {group: (PSNR dB, SSIM)}}.
PAPER_REFERENCE = {
    "msec": {"under": (23.57, 0.866), "over": (23.81, 0.877), "all": (23.69, 0.870)},
    "sice": {"under": (22.50, 0.825), "over": (20.81, 0.796)},
    "lcdp": {"all": (23.54, 0.847)},
}

# predict(inputs [B, H, W, 3] float in [0, 1]) -> (image [B, H, W, 3], mask [B, H, W, 1] or None)
Predict = Callable[[jax.Array], tuple[jax.Array, jax.Array | None]]


# ---- groups --------------------------------------------------------------------------------

def base_name(dataset: str) -> str:
    """``msec/expert_c`` -> ``msec``."""
    return dataset.split("/")[0]


def group_names(dataset: str, exposure: str) -> tuple[str, ...]:
    """The groups an image with exposure label ``exposure`` counts in (module docstring)."""
    base = base_name(dataset)
    if base == "msec":
        if exposure not in MSEC_LEVELS:
            raise ValueError(f"MSEC image with exposure label {exposure!r}: expected one of "
                             f"{MSEC_LEVELS} (the file-name suffix); rebuild the dataset")
        return exposure, ("under" if exposure in MSEC_UNDER else "over"), "all"
    if base == "sice":
        if exposure not in SICE_GROUPS:
            raise ValueError(f"SICE image with exposure label {exposure!r}: expected 'low' or 'over'")
        return SICE_GROUPS[exposure], "all"
    return ("all",)


def group_order(dataset: str) -> tuple[str, ...]:
    """The groups of a dataset in table order."""
    base = base_name(dataset)
    if base == "msec":
        return MSEC_LEVELS + ("under", "over", "all")
    if base == "sice":
        return ("under", "over", "all")
    return ("all",)


def aggregate(dataset: str, per_image: list[dict]) -> dict[str, dict]:
    """Per-group means (float64) and counts of the per-image scores, in :func:`group_order`."""
    members: dict[str, list[dict]] = collections.defaultdict(list)
    for rec in per_image:
        for g in group_names(dataset, rec["exposure"]):
            members[g].append(rec)
    out = {}
    for g in group_order(dataset):
        if members.get(g):
            recs = members[g]
            out[g] = {k: float(np.mean([r[k] for r in recs], dtype=np.float64)) for k in SCORES}
            out[g]["count"] = len(recs)
    return out


# ---- scoring ---------------------------------------------------------------------------------

@jax.jit
def _scores(image, inputs, targets):
    """Per-image scores of a batch, and the uint8 output for samples."""
    out = metrics.image_metrics(image, targets)
    base = metrics.image_metrics(inputs, targets)
    return {"psnr": out["psnr"], "ssim": out["ssim"], "input_psnr": base["psnr"],
            "input_ssim": base["ssim"], "output_u8": metrics.quantize(image)}


@dataclasses.dataclass
class _Pending:
    index: list[int] = dataclasses.field(default_factory=list)
    inputs: list[np.ndarray] = dataclasses.field(default_factory=list)
    targets: list[np.ndarray] = dataclasses.field(default_factory=list)
    meta: list[tuple[str, str]] = dataclasses.field(default_factory=list)


class _Evaluator:
    """Batches examples by size, runs predict + scores, keeps records and samples."""

    def __init__(self, predict: Predict, batch_size: int, data_sharding, num_samples: int):
        self.predict, self.batch_size, self.data_sharding = predict, batch_size, data_sharding
        self.num_samples = num_samples
        self.pending: dict[tuple[int, int], _Pending] = {}
        self.records: dict[int, dict] = {}
        self.samples: dict[int, dict] = {}

    def add(self, index: int, ex: dict) -> int:
        """Queues one eval example; returns how many images were scored by this call."""
        key = tuple(ex["input"].shape[1:3])
        p = self.pending.setdefault(key, _Pending())
        p.index.append(index)
        p.inputs.append(ex["input"][0])
        p.targets.append(ex["target"][0])
        p.meta.append((str(ex["name"][0]), str(ex["exposure"][0])))
        scored = 0
        if len(p.index) >= self.batch_size:
            scored += self.flush(key)
        if sum(len(q.index) for q in self.pending.values()) > 4 * self.batch_size:
            scored += self.flush(max(self.pending, key=lambda k: len(self.pending[k].index)))
        return scored

    def _put(self, x: np.ndarray) -> jax.Array:
        return jax.device_put(x, self.data_sharding) if self.data_sharding is not None else jnp.asarray(x)

    def flush(self, key) -> int:
        p = self.pending.pop(key)
        n = len(p.index)
        pad = (-n) % self.batch_size
        inputs = np.stack(p.inputs + [p.inputs[-1]] * pad)
        targets = np.stack(p.targets + [p.targets[-1]] * pad)
        x, y = self._put(inputs), self._put(targets)
        image, mask = self.predict(x)
        s = jax.device_get(_scores(image, x, y))
        mask_np = None if mask is None else np.asarray(jax.device_get(mask))
        for j, idx in enumerate(p.index):
            name, exposure = p.meta[j]
            self.records[idx] = {"name": name, "exposure": exposure,
                                 **{k: float(s[k][j]) for k in SCORES}}
            if idx < self.num_samples:
                sample = {"input": metrics.to_uint8(inputs[j]), "output": np.asarray(s["output_u8"][j]),
                          "target": metrics.to_uint8(targets[j])}
                if mask_np is not None:
                    sample["mask"] = metrics.to_uint8(mask_np[j, ..., 0])
                self.samples[idx] = sample
        return n

    def finish(self) -> int:
        return sum(self.flush(k) for k in list(self.pending))


def _gather_records(records: list[dict]) -> list[dict]:
    """Every process's records, in process order (one process: as they are)."""
    if jax.process_count() == 1:
        return records
    n = len(records)
    texts = [json.dumps([r["name"], r["exposure"]]).encode() for r in records]
    sizes = multihost_utils.process_allgather(
        np.asarray([n, max([len(t) for t in texts], default=0)], np.int64))
    max_n, max_len = int(sizes[:, 0].max()), int(sizes[:, 1].max())
    scores = np.zeros((max_n, len(SCORES)), np.float64)
    chars = np.zeros((max_n, max(max_len, 1)), np.uint8)
    for i, (r, t) in enumerate(zip(records, texts)):
        scores[i] = [r[k] for k in SCORES]
        chars[i, :len(t)] = np.frombuffer(t, np.uint8)
    all_scores = multihost_utils.process_allgather(scores)      # [P, max_n, 4]
    all_chars = multihost_utils.process_allgather(chars)        # [P, max_n, L]
    out = []
    for p in range(all_scores.shape[0]):
        for i in range(int(sizes[p, 0])):
            name, exposure = json.loads(bytes(all_chars[p, i]).rstrip(b"\0").decode())
            out.append({"name": name, "exposure": exposure,
                        **{k: float(v) for k, v in zip(SCORES, all_scores[p, i])}})
    return out


def evaluate_fn(predict: Predict, dataset: str, data_dir: str, *, split: str = "test",
                num_samples: int = 0, batch_size: int = 1, data_sharding=None,
                progress_log: bool = True) -> dict:
    """Evaluates any ``predict`` function (e.g. the identity) with the protocol and the groups.

    Args:
      predict: ``inputs [B, H, W, 3] -> (image [B, H, W, 3], mask [B, H, W, 1] or None)``.
      dataset, data_dir, split: the TFDS dataset (built by ``python -m recnet_jax.data.build``).
      num_samples: keep the first N images (uint8) as ``samples``.
      batch_size: images per predict call (same size only); the last batch of a size is padded.
      data_sharding: where the batches go (e.g. ``NamedSharding(mesh, P('data'))``); None: the
        default device.
      progress_log: log progress with an ETA (process 0 only).
    Returns:
      the results dict of the module docstring.
    """
    ds = pipeline.eval_dataset(dataset, data_dir, split=split, process_index=jax.process_index(),
                               process_count=jax.process_count())
    ev = _Evaluator(predict, batch_size, data_sharding, num_samples if jax.process_index() == 0 else 0)
    bar = progress.Progress(len(ds), f"evaluate {dataset} {split}",
                            enabled=progress_log and jax.process_index() == 0)
    for i, ex in enumerate(ds):
        bar.update(ev.add(i, ex))
    bar.update(ev.finish())
    local = [ev.records[i] for i in sorted(ev.records)]
    for r in local:
        group_names(dataset, r["exposure"])   # an unknown label fails here, on every process
    per_image = _gather_records(local)
    return {"dataset": dataset, "split": split, "num_images": len(per_image),
            "groups": aggregate(dataset, per_image), "per_image": per_image,
            "samples": [ev.samples[i] for i in sorted(ev.samples)]}


def _host_state(state):
    """The (replicated) parameters as host numpy arrays, from any sharding."""
    def leaf(a):
        if isinstance(a, jax.Array):
            return np.asarray(a if a.is_fully_addressable else a.addressable_data(0))
        return a
    return jax.tree.map(leaf, state)


def evaluate_model(model, dataset: str, data_dir: str, *, split: str = "test", num_samples: int = 0,
                   mesh: jax.sharding.Mesh | None = None, progress: bool = True,
                   per_device_batch: int = 1) -> dict:
    """Evaluates a :class:`recnet_jax.RECNet` (see :func:`evaluate_fn` and the module docstring).

    The model runs as one jitted program per image size (:func:`recnet_jax.inference.model_apply`).
    With ``mesh`` (a mesh with a ``data`` axis), batches of ``per_device_batch`` x this process's
    devices in the mesh are split over those devices, with the parameters replicated on them.
    """
    graphdef, state = nnx.split(model)
    apply = inference.model_apply(graphdef)
    data_sharding, n_dev = None, 1
    if mesh is not None:
        local = mesh.local_mesh
        n_dev = local.devices.size
        data_sharding = NamedSharding(local, P(sharding.DATA_AXIS))
        state = jax.device_put(_host_state(state), NamedSharding(local, P()))

    def predict(x):
        return apply(state, x)

    return evaluate_fn(predict, dataset, data_dir, split=split, num_samples=num_samples,
                       batch_size=per_device_batch * n_dev, data_sharding=data_sharding,
                       progress_log=progress)


# ---- reports ---------------------------------------------------------------------------------

def results_markdown(results: dict) -> str:
    """A Markdown table of the group scores (plus the paper's numbers where quoted)."""
    ref = PAPER_REFERENCE.get(base_name(results["dataset"]), {})
    lines = [f"RECNet on {results['dataset']} ({results['split']}, {results['num_images']} images); "
             "PSNR in dB, SSIM; input = the uncorrected image against the target.", ""]
    head = "| group | images | PSNR | SSIM | input PSNR | input SSIM |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if ref:
        head += " paper PSNR / SSIM (as quoted, not measured here) |"
        rule += "---:|"
    lines += [head, rule]
    for g, s in results["groups"].items():
        row = (f"| {GROUP_TITLES.get(g, g)} | {s['count']} | {s['psnr']:.2f} | {s['ssim']:.4f} | "
               f"{s['input_psnr']:.2f} | {s['input_ssim']:.4f} |")
        if ref:
            row += f" {ref[g][0]:.2f} / {ref[g][1]:.3f} |" if g in ref else " |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def write_results(results: dict, out_dir: str) -> tuple[str, str]:
    """Writes ``results.json`` (without samples) and ``results.md`` into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    js, md = os.path.join(out_dir, "results.json"), os.path.join(out_dir, "results.md")
    with open(js, "w") as f:
        json.dump({k: v for k, v in results.items() if k != "samples"}, f, indent=2)
    with open(md, "w") as f:
        f.write(results_markdown(results))
    return js, md


# ---- command line ----------------------------------------------------------------------------

FLAGS = flags.FLAGS


def _define_flags() -> None:
    """The command's flags (defined only when run as a program: the trainer and the demo import
    this module and define their own ``--config``)."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py): data.dataset, "
                                    "data.data_dir, model.conv_impl.", lock_config=True)
    flags.DEFINE_string("checkpoint", None, f"The weights: {weights.ACCEPTED}.")
    flags.DEFINE_string("out", "out/evaluate", "Folder for results.json and results.md.")
    flags.DEFINE_string("split", "test", "The split to evaluate (the papers report 'test'; the "
                        "trainer validates on config.data.eval_split).")
    flags.DEFINE_enum("norm_variant", "", ["", "paper", "official"],
                      "Override the checkpoint's normalisation variant ('' keeps it).")
    flags.mark_flags_as_required(["config", "checkpoint"])


def main(argv) -> None:
    del argv
    runtime.quiet_logs()
    runtime.initialize_distributed()
    config = FLAGS.config
    split = FLAGS.split
    try:
        model, source = weights.load(FLAGS.checkpoint, norm_variant=FLAGS.norm_variant or None,
                                     conv_impl=config.model.get("conv_impl", "auto"))
    except (ValueError, FileNotFoundError, ImportError) as e:
        logging.error("%s", e)
        raise SystemExit(2)
    logging.info("weights: %s", source)
    results = evaluate_model(model, config.data.dataset, config.data.data_dir, split=split,
                             mesh=sharding.make_mesh())
    results["weights"] = source
    if jax.process_index() == 0:
        js, md = write_results(results, FLAGS.out)
        logging.info("wrote %s and %s\n%s", js, md, results_markdown(results))
        print(json.dumps({"results": js, "table": md, "num_images": results["num_images"],
                          "groups": results["groups"]}))


if __name__ == "__main__":
    runtime.use_huge_pages()
    _define_flags()
    app.run(main)
