"""`python -m training.deepmica measure --split val|test`: cluster detection on held-out MIAS films.

Films: every film of the split with a located CALC circle, and every calcification-free (NORM)
film of the split. For the learned pipeline (`deepmica`, run as shipped but reporting every
cluster) and for the classical detector alone (`detect_microcalcifications` on the same enhanced
film, clusters scored by member count):

- FROC sensitivity at 0.25, 0.5, 1 and 2 false clusters per film (hits: `evaluate.hits_of`),
  with a 95% patient-bootstrap CI at 1 per film;
- false clusters per CALC film and per NORM film at that operating point;
- at the pipeline's `min_confidence` (the shipped operating point): sensitivity and false
  clusters per film.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm import tqdm

from mammo.io.meta import ImageMeta
from mammo.metrics import ImageDetections, froc_curve, froc_sensitivities, with_ci
from mammo.preprocess.microcalc import detect_microcalcifications, score_clusters
from training.config import TrainConfig
from training.deepmica.data import MIAS_MM, Film, load_films
from training.deepmica.evaluate import as_detections

RATES = (0.25, 0.5, 1.0, 2.0)
MIAS_META = ImageMeta(pixel_spacing_mm=(MIAS_MM, MIAS_MM), sources={"pixel_spacing_mm": "MIAS (200 µm)"})


def pipeline_clusters(pipe: Any, image: np.ndarray) -> tuple[list[list[float]], list[float]]:
    """The pipeline's clusters on one raw MIAS film: (centroids (row, col), confidences)."""
    clusters = pipe.run(image, MIAS_META).geometry["clusters"]
    return [c["centroid"] for c in clusters], [c["confidence"] for c in clusters]


def classical_clusters(film: Film, pixel_mm: float) -> tuple[list[tuple[float, float]], list[float]]:
    """The classical detector's clusters on the enhanced film (scores: member counts)."""
    scored = score_clusters(detect_microcalcifications(film.enhanced, film.breast, pixel_mm), None, pixel_mm)
    return [c.centroid for c, _ in scored], [s for _, s in scored]


def reachable(film: Film) -> list[tuple[float, float, float]]:
    """The circles whose centre lies in the breast: two MIAS CALC marks (mdb212, mdb214) sit in
    the air beside the skin line (runs/deepmica-seg/pseudo/), where no detector can find anything."""
    h, w = film.breast.shape
    return [c for c in film.circles if film.breast[min(h - 1, max(0, round(c[0]))), min(w - 1, max(0, round(c[1])))]]


def threshold_at(detections: list[ImageDetections], rate: float = 1.0) -> float:
    """The lowest score threshold whose false clusters per film stay <= `rate`."""
    fp, _, thresholds = froc_curve(detections)
    ok = np.flatnonzero(fp <= rate + 1e-9)
    return float(thresholds[ok[-1]])


def at_threshold(detections: list[ImageDetections], films: list[Film], t: float) -> dict[str, Any]:
    """Sensitivity and false clusters per film (all, CALC, NORM) keeping scores >= t."""
    kept = [(d.scores >= t) for d in detections]
    found = set()
    fps = []
    for i, (d, keep) in enumerate(zip(detections, kept)):
        fps.append(sum(1 for k, h in zip(keep, d.hits) if k and not h))
        found |= {(i, j) for k, h in zip(keep, d.hits) if k for j in h}
    n_lesions = sum(d.n_lesions for d in detections)
    calc = [fp for fp, f in zip(fps, films) if f.circles]
    norm = [fp for fp, f in zip(fps, films) if not f.circles]
    return {"threshold": t, "sensitivity": len(found) / n_lesions, "hits": len(found), "circles": n_lesions,
            "fp_per_film": float(np.mean(fps)), "fp_per_calc_film": float(np.mean(calc)) if calc else None,
            "fp_per_normal_film": float(np.mean(norm)) if norm else None}


def summary(detections: list[ImageDetections], films: list[Film], min_confidence: float | None) -> dict[str, Any]:
    """FROC points, the CI at 1 false cluster per film, and the fixed operating point."""
    groups = [f.patient_id for f in films]
    has_lesion = np.array([d.n_lesions > 0 for d in detections])

    def sens_at_1(idx: np.ndarray) -> float | None:
        return froc_sensitivities([detections[i] for i in idx], (1.0,))[1.0] if has_lesion[idx].any() else None

    out = {"froc": {str(k): v for k, v in froc_sensitivities(detections, RATES).items()},
           "sens_at_1fp": with_ci(sens_at_1, groups),
           "at_1fp": at_threshold(detections, films, threshold_at(detections, 1.0))}
    if min_confidence is not None:
        out["shipped_operating_point"] = at_threshold(detections, films, min_confidence)
    return out


def measure(pipe: Any, config: TrainConfig, split: str, threshold: float | None = None) -> dict[str, Any]:
    """Both detectors on the split's CALC and NORM films (see the module docstring); every circle,
    and the circles inside the breast (`reachable`). `threshold`: the pipeline's pixel threshold
    for this measurement (None: as it is)."""
    from mammo.datasets import load_dataset
    from mammo.io import read_image

    films = load_films(config, split)
    paths = {r.image_id: r.path for r in load_dataset("mias", config.data_root, split=f"{config.split}:{split}").refs}
    min_confidence, max_clusters, pixel_threshold = pipe.min_confidence, pipe.max_clusters, pipe.threshold
    pipe.min_confidence, pipe.max_clusters = -np.inf, 10**6  # every cluster, for the FROC
    pipe.threshold = pixel_threshold if threshold is None else threshold
    found: dict[str, list] = {"learned": [], "classical": []}
    for film in tqdm(films, desc=f"deepmica measure {split}", unit="film"):
        found["learned"].append(pipeline_clusters(pipe, read_image(paths[film.image_id])[0]))
        found["classical"].append(classical_clusters(film, config.deepmica_work_mm))
    used, pipe.min_confidence, pipe.max_clusters, pipe.threshold = pipe.threshold, min_confidence, max_clusters, \
        pixel_threshold
    out: dict[str, Any] = {"split": split, "pixel_threshold": used, "films": len(films), "calc_films": sum(1 for f in films if f.circles),
                           "circles": sum(len(f.circles) for f in films),
                           "circles_in_breast": sum(len(reachable(f)) for f in films)}
    for name, per_film in found.items():
        for circles, key in ((lambda f: f.circles, name), (reachable, f"{name}_in_breast")):
            dets = [as_detections(fc, circles(f), MIAS_MM) for fc, f in zip(per_film, films)]
            out[key] = summary(dets, films, min_confidence if name == "learned" else None)
    return out
