"""The value sets of options, each named once: the config's fields, the library's arguments and the CLI's
choices are these ``Literal`` types (the CLI derives its enums from them with ``typing.get_args``).

They live here, below everything, because the command line needs them at start-up: importing the config
or the model would load torch before ``mspt --help`` could answer.

| name | values | used by |
|---|---|---|
| ``Device`` | auto, cpu, cuda, mps | ``train.device`` (``config.py``), ``--device`` |
| ``Freeze`` | none, attention, encoder | ``train.freeze`` (``config.py``), ``mspt train --freeze`` |
| ``OnError`` | fail, skip | ``prepare_dataset(on_error=)``, ``mspt prepare --on-error`` |
| ``ExportFormat`` | onnx, torchscript | ``runtime/portable.py``, ``export_run(fmt=)``, ``mspt export --format`` |
| ``Units`` | mm, cm, m, in, ft | ``trust/check.py`` (``UNITS``), ``mspt predict --units`` |
"""

from __future__ import annotations

from typing import Literal

Device = Literal["auto", "cpu", "cuda", "mps"]
Freeze = Literal["none", "attention", "encoder"]
OnError = Literal["fail", "skip"]
ExportFormat = Literal["onnx", "torchscript"]
Units = Literal["mm", "cm", "m", "in", "ft"]
