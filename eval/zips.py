"""Uploaded zips, checked before anything is extracted and again while extracting.

    with ZipUpload(path, limits) as upload:   # names, member count, sizes, ratio: nothing written
        root = upload.extract(dest)          # the dataset folder: dest, or its only folder

Checked from the zip's directories before extracting: the size of the central directory (read
from the end record, so a zip of millions of entries is refused before `zipfile` parses them),
the number of members, every member name (no absolute path, no `..`), the declared total against
`max_unzipped_mb` and against `max_zip_ratio` times the zip's size. While extracting, the bytes
written are counted against the declared sizes, in case the headers lie (`zipfile` also stops at
a member's declared size and refuses a wrong CRC).
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from pathlib import Path
from types import TracebackType

from eval.limits import MIB, Limits, mb
from mammo.errors import MammoInputError

_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_JUNK = ("__MACOSX", ".DS_Store")  # macOS zip debris that would break the folder layout
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError,
               struct.error, OSError)
#: Bytes of central directory allowed per member: 46 fixed + name + extra fields, with room.
_DIRECTORY_BYTES_PER_MEMBER = 1024


class ZipUpload:
    """An uploaded zip whose member list passed every check; `extract` writes it out."""

    def __init__(self, zip_path: Path, limits: Limits) -> None:
        self.path, self.limits = zip_path, limits
        check_directory_size(zip_path, limits.max_zip_members)
        try:
            self._zip = zipfile.ZipFile(zip_path)
        except _ZIP_ERRORS as err:
            raise MammoInputError(f"cannot read zip {zip_path.name!r}: {err}") from err
        try:
            self.members = self._plan()
        except BaseException:
            self._zip.close()
            raise
        self.declared = sum(info.file_size for info, _ in self.members)

    def __enter__(self) -> ZipUpload:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._zip.close()

    def _plan(self) -> list[tuple[zipfile.ZipInfo, list[str]]]:
        """The members to extract with their path parts, after the count, name and size checks."""
        infos, limits, name = self._zip.infolist(), self.limits, self.path.name
        if len(infos) > limits.max_zip_members:
            raise MammoInputError(f"zip {name!r} holds {len(infos):,} members; the limit is "
                                  f"{limits.max_zip_members:,}")
        members = [(info, _member_parts(info.filename)) for info in infos]
        members = [(info, parts) for info, parts in members if parts and not info.is_dir()
                   and parts[0] not in _JUNK and not parts[-1].startswith("._")
                   and parts[-1] not in _JUNK]
        if not members:
            raise MammoInputError(f"zip {name!r} holds no files")
        declared = sum(info.file_size for info, _ in members)
        if declared > limits.max_unzipped_mb * MIB:
            raise MammoInputError(f"zip unpacks to {mb(declared)}; the limit is "
                                  f"{limits.max_unzipped_mb:g} MB")
        ratio = declared / max(self.path.stat().st_size, 1)
        if ratio > limits.max_zip_ratio:
            raise MammoInputError(f"zip unpacks to {ratio:.0f} times its size (the limit is "
                                  f"{limits.max_zip_ratio:g}); images do not compress that well, "
                                  "a zip bomb does")
        return members

    def extract(self, dest: Path) -> Path:
        """Write the members under `dest`; return the dataset folder (dest, or its only folder)."""
        budget = self.declared
        try:
            for info, parts in self.members:
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                budget -= _copy_member(self._zip, info, target, budget)
        except _ZIP_ERRORS as err:
            raise MammoInputError(f"cannot read zip {self.path.name!r}: {err}") from err
        entries = list(dest.iterdir())
        return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int) -> int:
    """Copy one member to `target`; its bytes, refused past its declared size or the budget."""
    written = 0
    with zf.open(info) as src, open(target, "wb") as dst:
        while chunk := src.read(MIB):
            written += len(chunk)
            if written > info.file_size or written > budget:
                raise MammoInputError(f"zip member {info.filename!r} unpacks to more than its "
                                      "declared size; nothing was kept")
            dst.write(chunk)
    return written


def _member_parts(name: str) -> list[str]:
    """Path components of a zip member; MammoInputError when it could land outside the folder."""
    if name.startswith(("/", "\\")) or _DRIVE_RE.match(name):
        raise MammoInputError(f"zip member {name!r} has an absolute path; nothing was extracted")
    parts = [part for part in re.split(r"[/\\]", name) if part not in ("", ".")]
    if ".." in parts:
        raise MammoInputError(f"zip member {name!r} points outside the zip (..); nothing was extracted")
    return parts


def check_directory_size(zip_path: Path, max_members: int) -> None:
    """Refuse a zip whose central directory is too big for `max_members` entries, reading only
    its end record: parsing millions of entries would take the request's time and memory."""
    size = central_directory_size(zip_path)
    if size is None:
        raise MammoInputError(f"upload {zip_path.name!r} is not a zip file")
    if size > max_members * _DIRECTORY_BYTES_PER_MEMBER:
        raise MammoInputError(f"zip {zip_path.name!r} lists more members than the limit of "
                              f"{max_members:,} (its directory is {mb(size)})")


def central_directory_size(zip_path: Path) -> int | None:
    """The central directory's size from the end record (zip64 too); None if there is none."""
    with open(zip_path, "rb") as handle:
        end = handle.seek(0, 2)
        handle.seek(max(0, end - 22 - 65535))  # the end record, after at most a 64 kB comment
        tail = handle.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < 22:
            return None
        size = struct.unpack_from("<I", tail, at + 12)[0]
        locator = tail[at - 20:at] if at >= 20 else b""
        if size == 0xFFFFFFFF and locator[:4] == b"PK\x06\x07":  # zip64: the size is elsewhere
            handle.seek(struct.unpack_from("<Q", locator, 8)[0])
            record = handle.read(56)
            if len(record) < 56 or record[:4] != b"PK\x06\x06":
                return None
            size = struct.unpack_from("<Q", record, 40)[0]
    return size

