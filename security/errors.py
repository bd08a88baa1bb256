"""The errors the security package raises on purpose.

Authentication and crypto failures are deliberately opaque: the caller learns
that a token or ciphertext was refused, never which check failed.
"""

from __future__ import annotations


class SecurityError(Exception):
    """Base for every error security raises on purpose."""
