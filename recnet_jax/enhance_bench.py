"""The ``enhance`` suite of ``python -m recnet_jax.bench``: full-resolution enhancement per photo size.

    python -m recnet_jax.bench --suite enhance --out bench_results/enhance.json \
        [--sizes 1632x1224,2048x2048,4000x3000] [--lean auto,on,off] [--checkpoint PATH] [--repeats 5]

Each (size, path) is measured in its own process (so its ``peak_rss_mb`` is that size's alone),
which builds a RECNet (``--checkpoint``, or the default architecture with random weights: the cost
does not depend on the values), makes a random uint8 photo and times
:func:`recnet_jax.enhance.enhance_array` with :func:`recnet_jax.bench.time_calls`. The sizes are
``WxH`` (or ``N`` for ``NxN``), comma-separated; the default is 2, 4.2 (2048^2, the issue's bound)
and 12 megapixels. ``--lean``: ``auto`` (by size, ``inference.LEAN_MIN_PIXELS``), ``on`` (the
staged path), ``off`` (one program).

Records (``framework`` 'jax', ``kind`` 'enhance', ``batch`` 1, ``h`` x ``w`` the photo): the
inference programs compile inside the first call, so ``compile_s`` is null and ``first_call_s`` (the
first warm-up call) includes the compile (``compile_in_first_call``); ``median_s`` is the median of
the timed calls after it. Suite fields: ``lean`` (the path taken), ``lean_mode`` (the one asked for),
``megapixels``, ``mpix_per_s``, ``peak_rss_bytes_per_pixel`` (the whole process's peak: Python, JAX,
the compile, the photo, input and output), ``calls_extra_rss_bytes_per_pixel`` (the memory the
calls alone add), ``checkpoint``, ``backend`` and ``output_shape``.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx

from recnet_jax import bench, enhance, inference, weights
from recnet_jax.model import RECNet

DEFAULT_SIZES = "1632x1224,2048x2048,4000x3000"
LEAN_MODES = {"auto": None, "on": True, "off": False}
DEFINITIONS = {
    "enhance": "enhance.enhance_array(model, uint8 [h, w, 3] photo, lean=...) incl. host copies",
    "first_call_s": "the first call, the inference programs' compile included",
    "peak_rss_bytes_per_pixel": "peak_rss_mb * 2**20 / (h * w)",
    "calls_extra_rss_bytes_per_pixel": "calls_extra_rss_mb * 2**20 / (h * w)",
}


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'WxH,N,...' -> [(W, H), (N, N), ...]."""
    out = []
    for item in (s.strip().lower() for s in str(text).split(",")):
        if not item:
            continue
        try:
            w, h = (int(v) for v in item.split("x")) if "x" in item else (int(item),) * 2
        except ValueError:
            raise ValueError(f"--sizes: {item!r} is not WxH (e.g. 4000x3000) or N") from None
        if min(w, h) < 1:
            raise ValueError(f"--sizes: {item!r} must be positive")
        out.append((w, h))
    if not out:
        raise ValueError(f"--sizes must be a comma list of WxH sizes, got {text!r}")
    return out


def specs(args) -> list[dict]:
    """One spec per (size, lean mode)."""
    leans = [m.strip() for m in args.lean.split(",") if m.strip()]
    unknown = sorted(set(leans) - set(LEAN_MODES))
    if unknown or not leans:
        raise ValueError(f"--lean: unknown modes {unknown or leans}; known: {tuple(LEAN_MODES)}")
    return [dict(suite="enhance", h=h, w=w, lean=lean, checkpoint=args.checkpoint,
                 repeats=args.repeats, warmup=max(args.warmup, 1))
            for w, h in parse_sizes(args.sizes or DEFAULT_SIZES) for lean in leans]


def measure(spec: dict) -> dict:
    """Times ``enhance_array`` on one random ``spec['w']`` x ``spec['h']`` photo -> a record."""
    h, w, ckpt = spec["h"], spec["w"], spec["checkpoint"]
    model = weights.load(ckpt)[0] if ckpt else RECNet(rngs=nnx.Rngs(0))
    photo = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    mode = LEAN_MODES[spec["lean"]]
    outs = {}

    def call(photo):
        outs["image"], _ = enhance.enhance_array(model, photo, lean=mode)   # host arrays: done

    timing = bench.time_calls(call, photo, repeats=spec["repeats"], warmup=spec["warmup"], sync=None)
    pixels = h * w
    used_lean = pixels >= inference.LEAN_MIN_PIXELS if mode is None else mode
    record = bench.make_record(
        "jax", "enhance", 1, h, w, timing, None, compile_in_first_call=True,
        lean=bool(used_lean), lean_mode=spec["lean"], megapixels=round(pixels / 1e6, 3),
        mpix_per_s=round(pixels / 1e6 / timing["median_s"], 4) if timing["median_s"] else None,
        checkpoint=ckpt or "random init", backend=jax.default_backend(),
        output_shape=list(outs["image"].shape))
    record["peak_rss_bytes_per_pixel"] = round(record["peak_rss_mb"] * 2**20 / pixels)
    extra = record["calls_extra_rss_mb"]
    record["calls_extra_rss_bytes_per_pixel"] = None if extra is None else round(extra * 2**20 / pixels)
    return record


def summary(records: Sequence[dict]) -> dict[str, Any]:
    """The report's extras: the lean threshold and the field definitions."""
    del records
    return {"lean_min_pixels": inference.LEAN_MIN_PIXELS, "definitions": DEFINITIONS}
