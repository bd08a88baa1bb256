"""The errors edge_node raises on purpose.

Every error carries its data as attributes and builds a lowercase message from
it, so a log line or an HTTP body tells a person which rule broke and with what
values. Adapters map these types to status codes in one table each.
"""

from __future__ import annotations


class EdgeNodeError(Exception):
    """Base for every error edge_node raises on purpose."""
