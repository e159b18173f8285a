"""Reading mammograms: `read_image(path) -> (image, ImageMeta)`."""

from mammo.errors import MammoInputError
from mammo.io.meta import ImageMeta
from mammo.io.read import read_image

__all__ = ["ImageMeta", "MammoInputError", "read_image"]
