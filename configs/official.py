"""Fine-tune converted official PyTorch weights with the release's own normalisation.

``norm_variant='official'`` computes exactly what the released code computes, so a checkpoint
trained with the PyTorch release continues here where it stopped (a converted model export, or
the official ``.pth`` / ``.npz`` directly, converted on the fly)::

    python -m recnet_jax.main --config configs/official.py --workdir runs/official \\
        --config.init_from=recnet.pth --config.loss.vgg_weights=vgg16.npz

``config.init_from`` is read only when the workdir has no checkpoint of its own (a restart
resumes from the workdir). Hardware: one GPU or TPU host. Expected result: not measured here (no
official weights are released; see ../shared/docs/recnet_reference.md section 8).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.norm_variant = "official"
    config.init_from = ""                 # required: a model export, an official .pth or .npz
    return config
