"""The release recipe on LCDP (Wang, Xu, Lau, ECCV 2022).

Build::

    python -m recnet_jax.data.build --dataset lcdp --manual_dir LCDP --data_dir data_dir --min_size 384

Train::

    python -m recnet_jax.main --config configs/lcdp.py --workdir runs/lcdp \\
        --config.loss.vgg_weights=vgg16.npz

The release publishes no LCDP recipe; this is its MSEC recipe. Expected result: not measured
here. The paper reports (as quoted by a later paper) 23.54 dB PSNR / 0.847 SSIM.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.dataset = "lcdp"
    config.eval_every_steps = 5_000
    return config
