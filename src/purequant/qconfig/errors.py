"""Errors raised by the qconfig layer.

Every message names the offending entry and says what to do about it, because these errors are
met by users converting an existing torch.ao configuration, usually far from the line that built
it.
"""

from __future__ import annotations

from purequant.errors import ConfigError


class QConfigError(ConfigError, ValueError):
    """A qconfig, a qconfig mapping or one of its entries is invalid.

    Also a ValueError so that code written against torch.ao (which raises ValueError or
    AssertionError for bad configs) keeps catching it.
    """


class QualifiedNameError(QConfigError):
    """An object has no importable qualified name, or a qualified name does not resolve."""
