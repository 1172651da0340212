"""make demo's job end to end (small: the bundled photo is 448 x 300) and the enhance helper."""

import json

import numpy as np
import pytest
from PIL import Image

from recnet_jax import demo, enhance


def test_demo_writes_images_and_an_honest_summary(tmp_path, caplog):
    assert demo.main(["--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["trained"] is False and "UNTRAINED" in summary["weights"]
    assert "UNTRAINED" in caplog.text
    for name in summary["files"]:
        with Image.open(tmp_path / name) as im:
            # comparison.png: input, output, target and mask side by side
            assert im.size == ((4 * 448 if name == "comparison.png" else 448), 300), name
    # The synthetic input really is mis-exposed: far from the target.
    assert summary["input_vs_target"]["psnr"] < 20


def test_enhance_image_contract(tmp_path):
    import recnet_jax
    from flax import nnx
    model = recnet_jax.RECNet(num_blocks=1, rngs=nnx.Rngs(0))
    photo = np.random.default_rng(0).integers(0, 256, size=(21, 30, 3), dtype=np.uint8)
    image, mask = enhance.enhance_image(model, photo)
    assert image.shape == photo.shape and image.dtype == np.uint8
    assert mask.shape == (21, 30) and 0.0 < mask.min() and mask.max() < 1.0
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        enhance.enhance_image(model, photo.astype(np.float32))
