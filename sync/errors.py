"""The errors the sync package raises on purpose."""

from __future__ import annotations


class SyncError(Exception):
    """Base for every error sync raises on purpose."""
