"""mammo: segment and classify breast lesions on mammograms.

Heavy frameworks (torch, tensorflow) are never imported here; pipelines load them lazily.
"""

from mammo.errors import MammoInputError
from mammo.pipelines.registry import get_pipeline, list_pipelines

__version__ = "0.1.0"

__all__ = ["MammoInputError", "__version__", "get_pipeline", "list_pipelines"]
