"""Reading mammograms: `read_image(path, allow_modality=False) -> (image, ImageMeta)`."""

from mammo.errors import MammoInputError, ModalityNotAllowedError
from mammo.io.meta import ImageMeta
from mammo.io.read import read_image

__all__ = ["ImageMeta", "MammoInputError", "ModalityNotAllowedError", "read_image"]
