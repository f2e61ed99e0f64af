"""alexnetc: a compiler for AlexNet-family networks, from text spec to trained PyTorch module."""

__version__ = "0.1.0"
