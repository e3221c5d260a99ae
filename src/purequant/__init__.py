"""purequant: quantize PyTorch models through pure functions over immutable graphs."""

__version__ = "0.1.0"
