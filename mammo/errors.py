"""Exceptions raised by mammo for input a person must fix."""

from __future__ import annotations


class MammoInputError(ValueError):
    """An input file or array cannot be used; the message says why and what to do.

    Raised before any work is done on the input, so nothing is written for it.
    """
