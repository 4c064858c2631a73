"""The engine: networks as pure functions over stacked parameters (population axis K first)."""

from caviar.nn.network import Architecture, backward, forward, init_params

__all__ = ["Architecture", "backward", "forward", "init_params"]
