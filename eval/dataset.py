"""Dataset specs ("KIND:PATH") -> loaders; the bottom of `eval` with `eval.table` (no `eval` imports)."""

from __future__ import annotations

from pathlib import Path

from mammo.datasets import LOADERS, DatasetLoader, load_dataset
from mammo.errors import MammoInputError


def parse_dataset(spec: str) -> tuple[str, Path]:
    """"KIND:PATH" -> (kind, path); KIND must be a loader of `mammo.datasets.LOADERS`."""
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise MammoInputError(f"dataset {spec!r} must be KIND:PATH, e.g. cdd-cesm:../shared/data/cdd_cesm; "
                              f"kinds: {', '.join(LOADERS)}")
    if kind not in LOADERS:
        raise MammoInputError(f"unknown dataset kind {kind!r}; kinds: {', '.join(LOADERS)}")
    return kind, Path(path).expanduser()


def open_dataset(spec: str, split: str | None = None, limit: int | None = None) -> DatasetLoader:
    """The loader for "KIND:PATH", restricted to `split` (a name or CSV, see `load_dataset`) and the
    first `limit` images."""
    kind, path = parse_dataset(spec)
    loader = load_dataset(kind, path, split=split)
    return loader if limit is None else loader.head(limit)
