"""Compression: quantized versions of a package, gated on accuracy."""

from sampan.compress.int8 import QUANTIZERS, compress

__all__ = ["QUANTIZERS", "compress"]
