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
#: Most values (counted with repeats) and deepest nesting `check_plain` accepts.
MAX_ITEMS = 20_000_000
MAX_DEPTH = 100


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that refuses every global lookup and persistent id."""

    def find_class(self, module: str, name: str) -> NoReturn:
        raise MammoInputError(f"refusing to load {module}.{name} from a pickle: only plain data "
                              "(dict, list, tuple, str, int, float, bool, None) is allowed")

    def persistent_load(self, pid: Any) -> NoReturn:
        raise MammoInputError("refusing a pickle with persistent ids: only plain data is allowed")


def check_plain(obj: Any, max_items: int = MAX_ITEMS, max_depth: int = MAX_DEPTH) -> None:
    """Raise MammoInputError unless `obj` is nested plain containers of plain values.

    A pickle may store one container once and refer to it many times, so a 2 kB pickle can hold a
    list of 2**90 paths (depth 90, each level [x, x]). The walk visits each container once
    (by `id`), so it takes time in proportion to the pickle; it refuses more than `max_items`
    values counted each time they are reached (what any later walk over the data would do), a
    container that holds itself, and nesting deeper than `max_depth`.
    """
    _PlainWalk(max_items, max_depth).size(obj, 0)


class _PlainWalk:
    """One `check_plain` walk: the expanded size and height of every container seen, by id."""

    def __init__(self, max_items: int, max_depth: int) -> None:
        self.max_items, self.max_depth = max_items, max_depth
        self.seen: dict[int, tuple[int, int]] = {}  # id -> (values below it, counted each time; height)
        self.open: set[int] = set()  # ids on the current path, to catch a container holding itself
        self.visited = 0

    def size(self, obj: Any, depth: int) -> int:
        """The number of values in `obj` (itself included), each shared part counted each time."""
        if isinstance(obj, PLAIN_TYPES):
            return 1
        if not isinstance(obj, CONTAINER_TYPES):
            raise MammoInputError(f"pickle holds a {type(obj).__name__}, not plain data")
        key = id(obj)  # `obj` is alive (held by the root) for the whole walk, so its id is unique
        if key in self.open:
            raise MammoInputError("pickle holds a container that contains itself; only plain "
                                  "(tree-shaped) data is allowed")
        if key not in self.seen:
            self.seen[key] = self._expand(obj, key, depth)
        total, height = self.seen[key]
        if depth + height > self.max_depth:
            raise MammoInputError(f"pickle nests deeper than {self.max_depth} levels")
        return total

    def _expand(self, obj: Any, key: int, depth: int) -> tuple[int, int]:
        """(size, height) of a container seen for the first time."""
        if depth > self.max_depth:
            raise MammoInputError(f"pickle nests deeper than {self.max_depth} levels")
        self.open.add(key)
        total, height = 1, 0
        items = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
        for item in items:
            self.visited += 1
            total += self.size(item, depth + 1)
            if total > self.max_items or self.visited > self.max_items:
                raise MammoInputError(
                    f"pickle holds more than {self.max_items:,} values (counting a part stored "
                    "once but used many times each time it is used)")
            if not isinstance(item, PLAIN_TYPES):
                height = max(height, 1 + self.seen[id(item)][1])
        self.open.discard(key)
        return total, height


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
