"""Exceptions raised by mammo for input a person must fix."""

from __future__ import annotations

import os


class MammoInputError(ValueError):
    """An input file or array cannot be used; the message says why and what to do.

    Raised before any work is done on the input, so nothing is written for it.
    """


class ModalityNotAllowedError(MammoInputError):
    """A DICOM file whose Modality is not MG (mammography), refused unless allowed.

    `modality` is the file's Modality value (e.g. "CT"); channels may offer the user to read it
    anyway (`mammo predict --allow-modality`, `read_image(path, allow_modality=True)`).
    """

    def __init__(self, message: str, modality: str) -> None:
        super().__init__(message)
        self.modality = modality


def input_error(path: str | os.PathLike[str], problem: str, advice: str) -> MammoInputError:
    """A `MammoInputError` whose message names the file, what is wrong and what to do."""
    return MammoInputError(f"Cannot read image '{path}': {problem}. {advice}")
