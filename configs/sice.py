"""The release recipe on SICE (Cai et al.), ENC's mixed-exposure protocol.

Build::

    python -m recnet_jax.data.build --dataset sice --manual_dir SICE --data_dir data_dir --min_size 384

Train::

    python -m recnet_jax.main --config configs/sice.py --workdir runs/sice \\
        --config.loss.vgg_weights=vgg16.npz

The release publishes no SICE recipe; this is its MSEC recipe (lr 1e-4, 300k steps, batch 8,
384 crops). ENC trained SICE for 51,200 steps with steps at 25,600 and 38,400, which
``--config.num_train_steps=51200 --config.optim.lr_boundaries='(25599, 38399)'`` reproduces.
Expected result: not measured here. The paper reports (as quoted by a later paper) PSNR/SSIM
under 22.50 / 0.825 and over 20.81 / 0.796.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.dataset = "sice"
    config.eval_every_steps = 5_000
    return config
