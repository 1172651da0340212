"""The configs load, build the model they describe, and the ECR start-up check behaves as documented."""

import jax
import numpy as np
import pytest
from flax import nnx

import recnet_jax
from recnet_jax import losses
from configs import default, demo


def test_default_config_is_the_release_recipe():
    config = default.get_config()
    assert dict(config.loss.weights) == dict(l1=1.0, ssim=0.1, mask=0.25, color=1.0, ecr=0.1)
    model = nnx.eval_shape(lambda: recnet_jax.RECNet(**config.model, rngs=nnx.Rngs(config.seed)))
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert sum(int(np.prod(p.shape)) for p in params) == 38_975


def test_ecr_without_vgg_weights_fails_at_start_up_with_the_fix():
    with pytest.raises(FileNotFoundError) as err:
        losses.vgg_from_config(default.get_config().loss)
    assert "config.loss.vgg_weights" in str(err.value)
    assert "python -m recnet_jax.convert vgg16" in str(err.value)


def test_demo_config_uses_random_vgg_and_says_so_once(caplog):
    import logging
    with caplog.at_level(logging.INFO, logger="absl"):
        vgg = losses.vgg_from_config(demo.get_config().loss)
    assert vgg is not None
    notes = [r for r in caplog.records if "vgg_random_init" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO  # an opt-in: no warning in the demo log
