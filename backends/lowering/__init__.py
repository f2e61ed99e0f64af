"""Lowering: a `CheckedNetwork` becomes a PyTorch module, its towers placed on devices.

`build_module` is the entry point; `count_cross_bytes` measures what crosses between towers
(to compare with the checker's `cross_tower_bytes`); `export.py` writes the artifacts of
`alexnetc compile`.
"""

from alexnetc.backends.lowering.module import AlexnetcModule, StageModule, build_module
from alexnetc.backends.lowering.placement import (
    Layout,
    assemble,
    count_cross_bytes,
    parse_devices,
)
from alexnetc.backends.lowering.weights import (
    canonical_state_dict,
    load_canonical_state_dict,
    whole_layers,
)

__all__ = ["AlexnetcModule", "Layout", "StageModule", "assemble", "build_module",
           "canonical_state_dict", "count_cross_bytes", "load_canonical_state_dict",
           "parse_devices", "whole_layers"]
