"""mspt: Multi-Scale Patch Transformer surrogates for CFD."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mspt")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
