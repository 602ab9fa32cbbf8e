"""Running a network: the one inference path (``inference.py``) and the exported graph (``graph.py``, ``portable.py``).

One layer above ``model/``, which defines the networks and does no I/O: here clouds as the user has them
are packed, run and unpacked, and a network is written, run and verified as an ONNX or TorchScript file.
"""

from msptcli.runtime.graph import LAYOUT_INPUTS, QueryExample, layout_inputs, query_inputs, random_example
from msptcli.runtime.inference import (
    DEFAULT_CHUNK_POINTS,
    PackedClouds,
    pack_clouds,
    predict,
    predict_clouds,
    predict_queries,
    predict_queries_averaged,
)
from msptcli.runtime.portable import FORMATS, Format, export_model, run_exported, verify_export

__all__ = [
    "DEFAULT_CHUNK_POINTS",
    "FORMATS",
    "LAYOUT_INPUTS",
    "Format",
    "PackedClouds",
    "QueryExample",
    "export_model",
    "layout_inputs",
    "pack_clouds",
    "predict",
    "predict_clouds",
    "predict_queries",
    "predict_queries_averaged",
    "query_inputs",
    "random_example",
    "run_exported",
    "verify_export",
]
