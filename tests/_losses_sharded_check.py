"""Run as a subprocess by tests/test_losses.py: loss_terms and its gradients with the batch sharded over 2
fake CPU devices (an Explicit mesh, as jax.make_mesh builds by default) against the unsharded values. Prints one JSON line.

Usage: python tests/_losses_sharded_check.py FIXTURE.npz
"""

import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_default_matmul_precision", "highest")
if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

from recnet_jax import losses  # noqa: E402


def main(path):
    with np.load(path) as d:
        fx = {k: d[k] for k in d.files if not k.startswith(("param/", "grad"))}
    nhwc = lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))  # noqa: E731
    image, mask, lq, gt = (nhwc(fx[k]) for k in ("out", "mask", "lq", "gt"))
    vgg = losses.load_vgg16({k: v for k, v in fx.items() if k.startswith("vgg/")})
    weights = {"l1": 1.0, "ssim": 0.3, "mask": 0.5, "color": 2.0, "ecr": 0.7}

    class Out:  # the loss reads only .image and .mask
        def __init__(self, image, mask):
            self.image, self.mask = image, mask

    def f(image, mask, lq, gt, vgg):
        terms = losses.loss_terms(Out(image, mask), lq, gt, vgg, weights)
        return terms["total"], terms

    step = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))
    (_, ref_terms), ref_grads = step(image, mask, lq, gt, vgg)
    report = {"devices": jax.device_count()}
    for axis_type in (AxisType.Explicit,):  # jax.make_mesh's default; Auto meshes were checked equal too
        mesh = jax.make_mesh((2,), ("data",), axis_types=(axis_type,))
        with jax.set_mesh(mesh):
            shard = NamedSharding(mesh, P("data"))
            args = [jax.device_put(a, shard) for a in (image, mask, lq, gt)]
            vgg_r = jax.device_put(vgg, NamedSharding(mesh, P()))
            (_, terms), grads = step(*args, vgg_r)
            report[axis_type.name] = {
                "term_max_rel": max(
                    abs(float(terms[k]) - float(ref_terms[k])) / abs(float(ref_terms[k])) for k in ref_terms
                ),
                "grad_max_rel": max(
                    float(np.abs(np.asarray(g) - np.asarray(r)).max() / np.abs(np.asarray(r)).max())
                    for g, r in zip(grads, ref_grads)
                ),
                "grad_sharding": str(grads[0].sharding.spec),
            }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
