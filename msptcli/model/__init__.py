"""The Multi-Scale Patch Transformer (MSPT): config, layout, attention, network, inference."""

from msptcli.model.config import AdaptiveConfig, AnchorConfig, ModelConfig
from msptcli.model.inference import (
    DEFAULT_CHUNK_POINTS,
    PackedClouds,
    pack_clouds,
    predict,
    predict_clouds,
    predict_queries,
    predict_queries_averaged,
)
from msptcli.model.layout import PatchChunk, PatchLayout, build_layout
from msptcli.model.mspt import MSPT, MSPTBlock
from msptcli.model.network import BackboneNetwork, Network, build_network
from msptcli.model.pmsa import PMSA, SupernodePool

__all__ = [
    "DEFAULT_CHUNK_POINTS",
    "MSPT",
    "PMSA",
    "AdaptiveConfig",
    "AnchorConfig",
    "BackboneNetwork",
    "MSPTBlock",
    "ModelConfig",
    "Network",
    "PackedClouds",
    "PatchChunk",
    "PatchLayout",
    "SupernodePool",
    "build_layout",
    "build_network",
    "pack_clouds",
    "predict",
    "predict_clouds",
    "predict_queries",
    "predict_queries_averaged",
]
