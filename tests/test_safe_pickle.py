"""`mammo.datasets.safe_pickle.check_plain` does work in proportion to the pickle, not to the paths
through it (issue "Reliability"); the no-code-runs tests are in tests/test_datasets.py."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from mammo.datasets import load_dataset
from mammo.datasets.safe_pickle import MAX_DEPTH, check_plain, load_restricted, loads_restricted
from mammo.errors import MammoInputError


def shared_lists(depth: int) -> list:
    """[x, x] nested `depth` times: `depth + 1` lists, 2**depth paths to the innermost."""
    inner: list = []
    for _ in range(depth):
        inner = [inner, inner]
    return inner


@pytest.mark.timeout(60)
def test_pickle_of_shared_lists_is_refused_at_once(tmp_path: Path) -> None:
    payload = pickle.dumps(shared_lists(90), protocol=4)
    assert len(payload) < 2000  # a 2 kB file that a tree walk would never finish
    with pytest.raises(MammoInputError, match="more than 20,000,000 values"):
        loads_restricted(payload)
    root = tmp_path / "glam"
    (root / "images").mkdir(parents=True)
    (root / "exam_list_before_cropping.pkl").write_bytes(payload)
    with pytest.raises(MammoInputError, match="more than 20,000,000 values"):
        load_dataset("glam-exam", root)  # the path `python -m eval` and `mammo.glam run` take
    # No time limit here (speed is the bench's business): a walk by paths would never return, and
    # the timeout mark above ends that as a failure.


def test_shared_parts_within_the_limit_load() -> None:
    part = {"L-CC": ["0_L-CC"], "cancer": (0, 1)}
    data = [part, part, {"x": part}]
    assert loads_restricted(pickle.dumps(data)) == data
    check_plain(shared_lists(10))  # 2**11 values counted with repeats
    with pytest.raises(MammoInputError, match="more than 1,000 values"):
        check_plain(shared_lists(10), max_items=1000)


def test_depth_and_cycles() -> None:
    deep: list = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(MammoInputError, match=f"nests deeper than {MAX_DEPTH} levels"):
        loads_restricted(pickle.dumps(deep))
    ok: list = []
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    assert loads_restricted(pickle.dumps(ok)) == ok
    # a shallow path first, then the same list met deeper: the depth counts the deepest path
    sub: list = [[[]]]
    tower: list = [sub]
    for _ in range(MAX_DEPTH - 1):
        tower = [tower]
    with pytest.raises(MammoInputError, match="nests deeper"):
        check_plain([sub, tower])
    loop: list = [1]
    loop.append(loop)
    with pytest.raises(MammoInputError, match="contains itself"):
        loads_restricted(pickle.dumps({"a": loop}))


def test_wide_plain_pickle_loads(tmp_path: Path) -> None:
    data = [{"id": i, "name": f"case {i}", "v": [i, i + 0.5]} for i in range(50_000)]
    path = tmp_path / "wide.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    assert load_restricted(path) == data
