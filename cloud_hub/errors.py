"""The errors cloud_hub raises on purpose."""

from __future__ import annotations


class HubError(Exception):
    """Base for every error cloud_hub raises on purpose."""
