"""The release recipe: RECNet on MSEC with the official objective and optimiser settings.

Values come from the official ``configs/train_Enhance.yml`` (../shared/docs/recnet_reference.md
section 8): Adam (lr 1e-4, betas (0.9, 0.99), eps 1e-8), lr halved at 150k and 225k steps,
300k steps at a global batch of 8, random 384 x 384 crops with flips and rotation by 180 degrees,
loss weights L1 1, SSIM 0.1, mask BCE 0.25, colour 1, ECR 0.1.

Command (MSEC built with ``python -m recnet_jax.data.build --dataset msec --manual_dir DIR
--data_dir data_dir``; VGG16 ImageNet weights converted once with
``python -m recnet_jax.convert vgg16 vgg16-397923af.pth --out vgg16.npz``)::

    python -m recnet_jax.main --config configs/default.py --workdir runs/msec \\
        --config.loss.vgg_weights=vgg16.npz

Hardware: one GPU or TPU host (the release trained on one GPU); ``config.batch_size`` is global,
so the same file runs on a pod slice unchanged. Expected result: not measured here (the paper
reports MSEC 23.69 dB / 0.870 SSIM over all exposures, as quoted by a later paper).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 8                 # global: across all devices and hosts
    config.num_train_steps = 300_000
    config.log_every_steps = 100
    config.eval_every_steps = 22_100      # the release validates every 10 epochs of MSEC (2,210 steps each)
    config.checkpoint_every_steps = 2_000
    config.keep_checkpoints = 3           # the latest N, plus the best by validation PSNR
    config.num_eval_images = 4            # validation images written to TensorBoard
    config.init_from = ""                 # '': random init; or a model export, an official .pth / .npz
    config.ema_decay = 0.0                # > 0: validate and export a moving average of the weights

    config.model = ml_collections.ConfigDict()
    config.model.nc = 8                   # feature channels
    config.model.num_blocks = 5           # region-aware blocks
    config.model.num_heads = 2            # MRU channel-attention heads
    config.model.blur_size = 31           # learnable mask blur kernel side
    config.model.norm_variant = "paper"   # 'paper' (masked moments) or 'official' (the release)
    config.model.norm_eps = 1e-5
    config.model.conv_impl = "auto"       # 'auto': shifted sums + FFT on CPU, lax convs on GPU/TPU
    config.model.dtype = "float32"        # compute dtype of the convs: 'float32' or 'bfloat16'
    config.model.remat = True             # recompute each block in the backward: less memory, and
                                          # on CPU a faster step (README, Speed)

    config.loss = ml_collections.ConfigDict()
    config.loss.weights = ml_collections.ConfigDict(
        dict(l1=1.0, ssim=0.1, mask=0.25, color=1.0, ecr=0.1))   # the release's weights
    config.loss.vgg_weights = ""          # VGG16 .npz/.pth for the ECR; required while weights.ecr > 0
    config.loss.vgg_random_init = False   # True: random VGG features (demo only; logged)

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "msec"          # a TFDS name built by `python -m recnet_jax.data.build`
    config.data.data_dir = "data_dir"
    config.data.train_split = "train"
    config.data.eval_split = "test"       # validation: full images, the paper's protocol
    config.data.crop_size = 384
    config.data.num_threads = 8           # grain read threads per host
    config.data.num_shards = 0            # data shards (a multiple of the process count); 0: one
                                          # per process. Fixed: the same batches on any host count

    config.optim = ml_collections.ConfigDict()
    config.optim.schedule = "piecewise"   # 'piecewise' (the release) or 'cosine'
    config.optim.learning_rate = 1e-4     # Adam, no weight decay
    config.optim.b1 = 0.9
    config.optim.b2 = 0.99
    config.optim.eps = 1e-8
    config.optim.lr_boundaries = (149_999, 224_999)   # x lr_decay at each (optax counts from 0)
    config.optim.lr_decay = 0.5
    config.optim.warmup_steps = 0         # linear warm-up ('cosine' only)
    config.optim.final_lr_fraction = 0.0  # cosine end value, as a fraction of learning_rate
    config.optim.grad_clip = 0.0          # global-norm clipping; 0 = none (the release)
    return config
