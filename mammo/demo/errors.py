"""Which failures the demo shows as a message (not a traceback), the message's text, and the
checks of what API clients send (gradio passes a client's JSON values through unchecked: a list
as the pipeline name failed deep inside with "'list' object has no attribute 'partition'")."""

from __future__ import annotations

import os
from typing import Any

from mammo.errors import MammoInputError
from mammo.weights import WeightsIntegrityError, WeightsNotFoundError

#: Failures caused by what the user chose or by missing weights: shown as a message, logged as one
#: line, never as a traceback (they are not bugs).
USER_ERRORS = (MammoInputError, KeyError, WeightsNotFoundError, WeightsIntegrityError)


def error_message(err: BaseException) -> str:
    """The text to show for one of `USER_ERRORS` (a KeyError's str() would add quotes)."""
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


def _type_name(value: Any) -> str:
    return "a list" if isinstance(value, (list, tuple)) else type(value).__name__


def check_file_argument(value: Any) -> None:
    """The uploaded file as an endpoint receives it: a path (str) or None (nothing uploaded).

    Raises:
        MammoInputError: anything else (a list of files, a number, a dict), named in the message.
    """
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise MammoInputError(f"The file must be one uploaded file (a path), not {_type_name(value)}.")


def check_name_argument(value: Any) -> None:
    """A pipeline name as /predict receives it: a str.

    Raises:
        MammoInputError: anything else, e.g. a list (give /compare the list instead).
    """
    if not isinstance(value, str):
        hint = " To run several pipelines, call /compare." if isinstance(value, (list, tuple)) else ""
        raise MammoInputError(f"The pipeline must be one pipeline name (a string such as 'breast'), "
                              f"not {_type_name(value)}.{hint}")


def check_names_argument(value: Any) -> None:
    """Pipeline names as /compare receives them: a list of str (None: none chosen).

    Raises:
        MammoInputError: a single string, or a list holding something else than strings.
    """
    if value is None:
        return
    if not isinstance(value, (list, tuple)):
        raise MammoInputError(f"The pipelines to compare must be a list of pipeline names, "
                              f"not {_type_name(value)}.")
    wrong = [item for item in value if not isinstance(item, str)]
    if wrong:
        raise MammoInputError(f"The pipelines to compare must be a list of pipeline names "
                              f"(strings); it holds {_type_name(wrong[0])} {wrong[0]!r}.")
