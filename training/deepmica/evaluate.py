"""Cluster detection on MIAS films, scored against the annotated CALC circles.

A predicted cluster hits a circle when its centroid lies inside it. MIAS radii run from 0.6 mm
(mdb212: 3 px) to 17 mm; the small ones mark a cluster's centre rather than its extent, so every
radius counts as at least `MIN_RADIUS_MM` (half the 5 mm linkage distance of
`cluster_calcifications`: a cluster whose members are within one link of the mark). A cluster
that hits no circle is a false positive; detections become `mammo.metrics.ImageDetections`, so
the FROC and its bootstrap are the ones the other detectors use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mammo.metrics import ImageDetections
from mammo.preprocess.microcalc import score_clusters

MIN_RADIUS_MM = 2.5


def hits_of(centroids: Sequence[Sequence[float]], circles: Sequence[tuple[float, float, float]],
            pixel_mm: float, min_radius_mm: float = MIN_RADIUS_MM) -> list[frozenset[int]]:
    """For each (row, col) centroid, the indices of the circles (row, col, radius; pixels) holding it."""
    floor = min_radius_mm / pixel_mm
    return [frozenset(i for i, (r, c, rad) in enumerate(circles) if (cy - r) ** 2 + (cx - c) ** 2 <= max(rad, floor) ** 2)
            for cy, cx in centroids]


def as_detections(found: tuple[Sequence[Sequence[float]], Sequence[float]],
                  circles: Sequence[tuple[float, float, float]], pixel_mm: float) -> ImageDetections:
    """(centroids (row, col), scores) of one film's clusters -> `ImageDetections` against `circles`."""
    centroids, scores = found
    return ImageDetections(np.asarray(scores, float), hits_of(centroids, circles, pixel_mm), len(circles))


def detections(mask: np.ndarray, prob: np.ndarray | None, circles: Sequence[tuple[float, float, float]],
               pixel_mm: float) -> ImageDetections:
    """One film's clusters (`score_clusters`) as `ImageDetections` against its circles."""
    scored = score_clusters(mask, prob, pixel_mm)
    return as_detections(([c.centroid for c, _ in scored], [s for _, s in scored]), circles, pixel_mm)
