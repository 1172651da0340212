"""The release recipe on MSEC (Afifi et al., CVPR 2021): 17,680 training pairs, expert C targets.

Build the dataset once (the published folder layout, see docs/data.md)::

    python -m recnet_jax.data.build --dataset msec --manual_dir MSEC --data_dir data_dir --min_size 384

Train (one GPU/TPU host; ``config.batch_size`` is global, so a pod slice runs the same file)::

    python -m recnet_jax.main --config configs/msec.py --workdir runs/msec \\
        --config.loss.vgg_weights=vgg16.npz

Validation runs on the MSEC validation split every 10 epochs (22,100 steps), with the paper's
protocol. Expected result: not measured here. The paper reports (as quoted by a later paper's
comparison table) PSNR/SSIM under 23.57 / 0.866, over 23.81 / 0.877, all 23.69 / 0.870 on the
MSEC test set.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.data.dataset = "msec"
    config.data.eval_split = "validation"
    return config
