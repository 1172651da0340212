"""The embedded default: synthetic mixed exposure from the photos bundled with scikit-image, random VGG
features for the ECR (no download anywhere), a tiny crop and batch so that it runs on a laptop CPU.

    from configs import demo
    config = demo.get_config()
    vgg = recnet_jax.losses.vgg_from_config(config.loss)   # logs one warning: random VGG features

Build its data with ``python -m recnet_jax.data.build --dataset synthetic --data_dir data_dir``
(about 6 s; the last line is a JSON summary with 64 train and 4 test pairs). The training loop that
runs this config arrives with the training issue (``make demo`` will then train it).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.loss.vgg_random_init = True
    config.data.dataset = "synthetic"
    config.data.crop_size = 96
    config.data.per_device_batch_size = 4
    config.num_train_steps = 200
    return config
