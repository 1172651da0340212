"""RECNet training objective (reference §7): L1, SSIM term, colour, mask BCE and the ECR, NHWC, jittable.

Typical use::

  vgg = losses.vgg_from_config(config.loss)            # start-up check; None when the ECR weight is 0
  terms = losses.loss_terms(model(lq), lq, gt, vgg, weights=config.loss.weights)
  terms["total"]                                       # what to differentiate

Pass ``vgg`` into the jitted step as an argument (it is a pytree), not as a closure constant, and keep it
out of the optimizer: its weights are ``VGGWeight`` variables, not ``nnx.Param``.

The names below are loaded lazily, so that ``python -m recnet_jax.losses.vgg`` (the converter CLI) runs its
module exactly once.
"""

import importlib

_EXPORTS = {
    "recnet_jax.losses.ecr": ("ecr_loss", "ecr_terms", "max_pool4", "spatial_correlation"),
    "recnet_jax.losses.objective": (
        "DEFAULT_WEIGHTS",
        "TERMS",
        "loss_terms",
        "resolve_weights",
        "vgg_from_config",
    ),
    "recnet_jax.losses.reconstruction": (
        "color_loss",
        "gaussian_window_1d",
        "l1_loss",
        "luminance",
        "mask_bce",
        "mask_target",
        "ssim_loss",
        "ssim_map",
    ),
    "recnet_jax.losses.vgg": (
        "CONVERTER_COMMAND",
        "VGG16Features",
        "VGGWeight",
        "load_vgg16",
        "save_vgg16_npz",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'recnet_jax.losses' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
