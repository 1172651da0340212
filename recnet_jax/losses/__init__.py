"""RECNet training objective (reference §7): L1, SSIM term, colour, mask BCE and the ECR, NHWC, jittable.

Typical use::

  vgg = losses.vgg_from_config(config.loss)            # start-up check; None when the ECR weight is 0
  terms = losses.loss_terms(model(lq), lq, gt, vgg, weights=config.loss.weights)
  terms["total"]                                       # what to differentiate

Pass ``vgg`` into the jitted step as an argument (it is a pytree), not as a closure constant, and keep it
out of the optimizer: its weights are ``VGGWeight`` variables, not ``nnx.Param``. The VGG16 converter is
``python -m recnet_jax.convert vgg16 PATH.pth --out PATH.npz`` (:data:`CONVERTER_COMMAND`).
"""

from recnet_jax.losses.ecr import ecr_loss, ecr_terms, max_pool4, spatial_correlation
from recnet_jax.losses.objective import (DEFAULT_WEIGHTS, TERMS, loss_terms, resolve_weights,
                                         vgg_from_config)
from recnet_jax.losses.reconstruction import (color_loss, gaussian_window_1d, l1_loss, luminance,
                                              mask_bce, mask_target, ssim_loss, ssim_map)
from recnet_jax.losses.vgg import (CONVERTER_COMMAND, VGG16Features, VGGWeight, load_vgg16,
                                   save_vgg16_npz)

__all__ = [
    "CONVERTER_COMMAND", "DEFAULT_WEIGHTS", "TERMS", "VGG16Features", "VGGWeight", "color_loss",
    "ecr_loss", "ecr_terms", "gaussian_window_1d", "l1_loss", "load_vgg16", "loss_terms", "luminance",
    "mask_bce", "mask_target", "max_pool4", "resolve_weights", "save_vgg16_npz", "spatial_correlation",
    "ssim_loss", "ssim_map", "vgg_from_config",
]
