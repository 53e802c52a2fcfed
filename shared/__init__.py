"""Code used by both the edge agent and the cloud services."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("earwitness")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
