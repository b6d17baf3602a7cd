# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""kron-transformers: Kronecker-compressed BERT and GPT-2 for Hugging Face Transformers."""

from .kronecker import (
    kron_flops,
    kron_linear,
    kron_weight,
    kronecker_compression,
    kronecker_shapes,
    nearest_kronecker_product,
)
from .compression import CompressionReport, ModuleReport, compress
from .layers import KroneckerEmbedding, KroneckerLinear, KroneckerTiedLogits, replace_with_kronecker_modules


__version__ = "0.1.0.dev0"

__all__ = [
    "CompressionReport",
    "ModuleReport",
    "compress",
    "KroneckerEmbedding",
    "KroneckerLinear",
    "KroneckerTiedLogits",
    "kron_flops",
    "kron_linear",
    "kron_weight",
    "kronecker_compression",
    "kronecker_shapes",
    "nearest_kronecker_product",
    "replace_with_kronecker_modules",
]
