"""Every error mspt raises on purpose. The CLI turns these into one line and a non-zero exit."""


class MsptError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in mspt."""


class InvalidInputError(MsptError, ValueError):
    """Arrays of the wrong shape, dtype or values (empty clouds, NaN coordinates, ...)."""


class MeshReadError(MsptError):
    """A mesh file that is missing, unreadable, or not a mesh."""


class ConfigError(MsptError):
    """A configuration file or override that is not valid."""


class DatasetError(MsptError):
    """A prepared dataset or run directory that is missing, incomplete or inconsistent."""


class CheckpointError(MsptError):
    """A checkpoint that is missing, unreadable or not an mspt checkpoint."""


class OutputError(MsptError):
    """An output that cannot be written: a read-only or full file system, a path that is a directory."""


class OptionError(MsptError, ValueError):
    """Options that are not of their form (``--condition Re=fast``) or that contradict each other."""
