"""Load pickles that hold only plain data, without running any code they contain.

`pickle.load` can call any importable function (e.g. `os.system`) while loading. Every such call
needs a class or function looked up through `Unpickler.find_class`; `RestrictedUnpickler` refuses
all of them, so only what the pickle opcodes build directly can come out: dict, list, tuple, set,
frozenset, str, bytes, int, float, bool, None.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, NoReturn

from mammo.errors import MammoInputError

PLAIN_TYPES = (str, bytes, int, float, bool, type(None))
CONTAINER_TYPES = (dict, list, tuple, set, frozenset)
MAX_BYTES = 64 * 1024 * 1024


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that refuses every global lookup and persistent id."""

    def find_class(self, module: str, name: str) -> NoReturn:
        raise MammoInputError(f"refusing to load {module}.{name} from a pickle: only plain data "
                              "(dict, list, tuple, str, int, float, bool, None) is allowed")

    def persistent_load(self, pid: Any) -> NoReturn:
        raise MammoInputError("refusing a pickle with persistent ids: only plain data is allowed")


def check_plain(obj: Any, depth: int = 0) -> None:
    """Raise MammoInputError unless `obj` is nested plain containers of plain values."""
    if depth > 100:
        raise MammoInputError("pickle nests deeper than 100 levels")
    if isinstance(obj, PLAIN_TYPES):
        return
    if not isinstance(obj, CONTAINER_TYPES):
        raise MammoInputError(f"pickle holds a {type(obj).__name__}, not plain data")
    items = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else list(obj)
    for item in items:
        check_plain(item, depth + 1)


def loads_restricted(data: bytes) -> Any:
    """Unpickle bytes with `RestrictedUnpickler`; MammoInputError for code, or a broken pickle."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data)).load()
    except MammoInputError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, RecursionError) as err:
        raise MammoInputError(f"not a readable plain-data pickle: {type(err).__name__}: {err}") from err
    check_plain(obj)
    return obj


def load_restricted(path: str | Path) -> Any:
    """Read a plain-data pickle file (at most 64 MiB) without executing anything in it."""
    path = Path(path)
    if not path.is_file():
        raise MammoInputError(f"pickle file {path} does not exist")
    if path.stat().st_size > MAX_BYTES:
        raise MammoInputError(f"pickle file {path} is larger than {MAX_BYTES} bytes")
    return loads_restricted(path.read_bytes())
