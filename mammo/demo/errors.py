"""Which failures the demo shows as a message (not a traceback), and the message's text."""

from __future__ import annotations

from mammo.errors import MammoInputError
from mammo.weights import WeightsIntegrityError, WeightsNotFoundError

#: Failures caused by what the user chose or by missing weights: shown as a message, logged as one
#: line, never as a traceback (they are not bugs).
USER_ERRORS = (MammoInputError, KeyError, WeightsNotFoundError, WeightsIntegrityError)


def error_message(err: BaseException) -> str:
    """The text to show for one of `USER_ERRORS` (a KeyError's str() would add quotes)."""
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
