"""The release recipe: RECNet on MSEC, the official objective and optimiser settings.

Values come from the official ``configs/train_Enhance.yml`` (see ../shared/docs/recnet_reference.md
section 8). The training loop that consumes this file arrives with the training issue; today the
model, loss and data sections are used directly:

    from configs import default
    config = default.get_config()
    model = recnet_jax.RECNet(**config.model, rngs=nnx.Rngs(config.seed))
    vgg = recnet_jax.losses.vgg_from_config(config.loss)   # start-up check of the ECR's VGG16

Expected result of the start-up check without VGG weights: a FileNotFoundError naming
``config.loss.vgg_weights`` and the converter command
``python -m recnet_jax.losses.vgg --torchvision PATH.pth --out PATH.npz``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.nc = 8                   # feature channels
    config.model.num_blocks = 5           # region-aware blocks
    config.model.num_heads = 2            # MRU channel-attention heads
    config.model.blur_size = 31           # learnable mask blur kernel side
    config.model.norm_variant = "paper"   # 'paper' (masked moments) or 'official' (the release)
    config.model.conv_impl = "auto"       # 'auto': shifted sums + FFT on CPU, lax convs on GPU/TPU

    config.loss = ml_collections.ConfigDict()
    config.loss.weights = ml_collections.ConfigDict(
        dict(l1=1.0, ssim=0.1, mask=0.25, color=1.0, ecr=0.1))   # the release's weights
    config.loss.vgg_weights = ""          # VGG16 .npz/.pth for the ECR; required while weights.ecr > 0
    config.loss.vgg_random_init = False   # True: random VGG features (demo only; logs a warning)

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "msec"          # a TFDS name built by `python -m recnet_jax.data.build`
    config.data.data_dir = "data_dir"
    config.data.crop_size = 384
    config.data.per_device_batch_size = 8

    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 1e-4     # Adam, betas (0.9, 0.99), eps 1e-8, no weight decay
    config.optim.b1 = 0.9
    config.optim.b2 = 0.99
    config.optim.eps = 1e-8
    config.optim.lr_boundaries = (149_999, 224_999)   # x0.5 at each (optax counts from 0)
    config.optim.lr_decay = 0.5
    config.num_train_steps = 300_000
    return config
