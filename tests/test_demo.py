"""The enhance helper (make demo itself is tested in tests/test_train.py, on a tiny trained run)."""

import numpy as np
import pytest
from PIL import Image

from recnet_jax import enhance


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
