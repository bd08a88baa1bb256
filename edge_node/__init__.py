"""EdgeCare regional node: tickets, customers and (later) routing, served locally."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgecare")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+local"
