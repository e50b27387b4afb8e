"""flaxsent's version, from the installed package's metadata (pyproject.toml is the one source)."""

from importlib import metadata

try:
    __version__ = metadata.version("flaxsent")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
