"""The Multi-Scale Patch Transformer (MSPT)."""

from msptcli.model.batch import PackedBatch, pack_clouds
from msptcli.model.config import ModelConfig
from msptcli.model.layout import PatchChunk, PatchLayout, build_layout
from msptcli.model.mspt import MSPT, MSPTBlock
from msptcli.model.pmsa import PMSA, SupernodePool
from msptcli.model.streaming import stream_forward

__all__ = [
    "MSPT",
    "PMSA",
    "MSPTBlock",
    "ModelConfig",
    "PackedBatch",
    "PatchChunk",
    "PatchLayout",
    "SupernodePool",
    "build_layout",
    "pack_clouds",
    "stream_forward",
]
