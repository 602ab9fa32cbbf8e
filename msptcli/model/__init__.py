"""The networks: MSPT (config, layout, attention, blocks), the other backbones and ``build_network``.

Running them on clouds as the user has them, and exporting them, is ``msptcli.runtime``.
"""

from msptcli.model.config import AdaptiveConfig, AnchorConfig, ModelConfig
from msptcli.model.layout import PatchChunk, PatchLayout, build_layout
from msptcli.model.mspt import MSPT, MSPTBlock
from msptcli.model.network import BackboneNetwork, Network, build_network
from msptcli.model.pmsa import PMSA, SupernodePool

__all__ = [
    "MSPT",
    "PMSA",
    "AdaptiveConfig",
    "AnchorConfig",
    "BackboneNetwork",
    "MSPTBlock",
    "ModelConfig",
    "Network",
    "PatchChunk",
    "PatchLayout",
    "SupernodePool",
    "build_layout",
    "build_network",
]
