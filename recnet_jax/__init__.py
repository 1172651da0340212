"""recnet_jax: RECNet (Region-aware Exposure Consistency Network, AAAI 2024) in JAX/Flax NNX."""

from recnet_jax.model import RECNet, RECNetOutput

__all__ = ["RECNet", "RECNetOutput"]
__version__ = "0.1.0"
