"""How far a score can be trusted: the held-out AUC behind it, for the kind of image it is shown on.

A weights entry of `weights_manifest.yaml` may carry `evidence`: per class, the AUC measured on
held-out images (never trained on, patient-level splits), with its 95% patient-bootstrap CI, per
data source (`mammo.io.acquisition.ACQUISITIONS`) and data set::

    evidence:
      malignant:
        - {source: film, dataset: ddsm-films, split: test, auc: 0.83, ci95: [0.77, 0.88], n: 138, n_pos: 43,
           command: python -m training.measure_scores --entry glam-joint --split test}

`score_evidence` turns one score and the image's acquisition into what a user reads:
- measured on this kind of image and better than chance (CI lower bound above 0.5): the score
  with its AUC ("malignant 0.71 — test AUC 0.83 (0.77–0.88) on DDSM film");
- measured and not better than chance: no number ("not better than chance on ...");
- not measured on this kind (or the image's kind is unknown): the score, what it was measured on,
  and "not validated on digital".
This module imports neither torch nor tensorflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mammo.io.acquisition import ACQUISITIONS

DATASET_NAMES = {"ddsm-films": "DDSM film", "cdd-cesm-subtracted": "CDD-CESM subtracted", "mias": "mini-MIAS film",
                 "cdd-cesm": "CDD-CESM", "cbis-ddsm": "CBIS-DDSM film"}
STATUSES = ("validated", "mixed", "not_better_than_chance", "not_validated")


@dataclass(frozen=True)
class Evidence:
    """One held-out measurement of one class's score on one data source.

    Attributes:
        source: "film", "digital" or "cesm" (`mammo.io.acquisition.ACQUISITIONS`).
        dataset: the loader kind measured on (`mammo.datasets.LOADERS`), e.g. "ddsm-films".
        split: the split of the split CSV named by the entry's training info, e.g. "test".
        auc: ROC AUC in [0, 1]; ci95: (low, high) patient-bootstrap 95% interval.
        n, n_pos: images measured and positives among them.
        command: the command that measured it.
    """

    source: str
    dataset: str
    split: str
    auc: float
    ci95: tuple[float, float]
    n: int
    n_pos: int
    command: str

    @property
    def better_than_chance(self) -> bool:
        return self.ci95[0] > 0.5

    def phrase(self) -> str:
        """E.g. "test AUC 0.83 (0.77–0.88) on DDSM film"."""
        name = DATASET_NAMES.get(self.dataset, self.dataset)
        return f"{self.split} AUC {self.auc:.2f} ({self.ci95[0]:.2f}–{self.ci95[1]:.2f}) on {name}"


class EvidenceError(ValueError):
    """A malformed `evidence` block; the message names the entry, class and item."""


def _number(item: Mapping[str, Any], key: str, where: str, low: float, high: float) -> float:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise EvidenceError(f"{where}: {key} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _count(item: Mapping[str, Any], key: str, where: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EvidenceError(f"{where}: {key} must be a count >= 0, got {value!r}")
    return value


def parse_item(item: Any, where: str) -> Evidence:
    """One raw evidence mapping -> `Evidence`; EvidenceError naming `where` when malformed."""
    keys = tuple(Evidence.__dataclass_fields__)
    if not isinstance(item, Mapping) or set(item) != set(keys):
        got = sorted(item) if isinstance(item, Mapping) else type(item).__name__
        raise EvidenceError(f"{where}: expected exactly the keys {', '.join(keys)}, got {got}")
    if item["source"] not in ACQUISITIONS:
        raise EvidenceError(f"{where}: source must be one of {', '.join(ACQUISITIONS)}, got {item['source']!r}")
    for key in ("dataset", "split", "command"):
        if not isinstance(item[key], str) or not item[key].strip():
            raise EvidenceError(f"{where}: {key} must be a non-empty string, got {item[key]!r}")
    ci = item["ci95"]
    if not isinstance(ci, list) or len(ci) != 2:
        raise EvidenceError(f"{where}: ci95 must be [low, high], got {ci!r}")
    low, high = (_number({"ci95": v}, "ci95", where, 0.0, 1.0) for v in ci)
    auc = _number(item, "auc", where, 0.0, 1.0)
    if not low <= auc <= high:
        raise EvidenceError(f"{where}: auc {auc} lies outside its ci95 [{low}, {high}]")
    n, n_pos = _count(item, "n", where), _count(item, "n_pos", where)
    if not 0 < n_pos < n:
        raise EvidenceError(f"{where}: an AUC needs positives and negatives, got n={n}, n_pos={n_pos}")
    return Evidence(item["source"], item["dataset"], item["split"], auc, (low, high), n, n_pos, item["command"])


def parse_evidence(raw: Any, classes: tuple[str, ...], where: str) -> Mapping[str, tuple[Evidence, ...]]:
    """The raw `evidence` block of a manifest entry -> class -> its measurements (one per source)."""
    if not isinstance(raw, Mapping):
        raise EvidenceError(f"{where}: evidence must map class -> list, got {type(raw).__name__}")
    out: dict[str, tuple[Evidence, ...]] = {}
    for name, items in raw.items():
        if name not in classes:
            raise EvidenceError(f"{where}: evidence for {name!r}, which is not one of the classes {list(classes)}")
        if not isinstance(items, list) or not items:
            raise EvidenceError(f"{where}.{name}: expected a non-empty list of measurements")
        parsed = tuple(parse_item(item, f"{where}.{name}[{i}]") for i, item in enumerate(items))
        pairs = [(e.source, e.dataset) for e in parsed]
        if len(set(pairs)) != len(pairs):
            raise EvidenceError(f"{where}.{name}: one measurement per (source, dataset), got {pairs}")
        out[name] = parsed
    return out


def score_evidence(name: str, score: float, measured: tuple[Evidence, ...], acquisition: str | None) -> dict:
    """What to show for class `name`'s `score` on an image of kind `acquisition` (None: unknown).

    The measurements on the image's kind decide; when there are none, all of them do (the score is
    then shown with "not validated on <kind>"). Every one better than chance: the number with its
    AUCs; none better than chance: no number; some: the number with every AUC ("mixed").

    Returns a JSON-ready dict: "score" (None where the number must not be shown), "status" (one of
    `STATUSES`), "text" (the sentence to show), "acquisition", and "measured" (every measurement).
    """
    on_source = [e for e in measured if e.source == acquisition]
    deciding = on_source or list(measured)
    phrases = "; ".join(e.phrase() for e in deciding)
    good = [e.better_than_chance for e in deciding]
    missing = "" if on_source else ("; this image's kind (film, digital, CESM) is unknown" if acquisition is None
                                    else f"; not validated on {acquisition}")
    if not any(good):
        status, shown = "not_better_than_chance", None
        where = f"{acquisition} images" if on_source else "where measured"
        text = f"{name}: no score — not better than chance on {where} ({phrases}){missing}"
    else:
        status = ("validated" if all(good) else "mixed") if on_source else "not_validated"
        shown, text = score, f"{name} {score:.2f} — {phrases}{missing}"
    return {"score": shown, "status": status, "text": text, "acquisition": acquisition,
            "measured": [{**asdict(e), "ci95": list(e.ci95)} for e in measured]}


def result_evidence(scores: Mapping[str, float], evidence: Mapping[str, tuple[Evidence, ...]],
                    acquisition: str | None) -> dict[str, dict]:
    """`score_evidence` for every score that has a class in `evidence`. A score without its own
    measurements that is exactly 1 - a measured score (tiryaki-mass and deepmica give "benign" =
    1 - "malignant") carries that one's verdict, so a withheld number cannot be read off its
    complement; the other scores are left out."""
    out = {name: score_evidence(name, float(value), evidence[name], acquisition)
           for name, value in scores.items() if name in evidence}
    for name, value in scores.items():
        twin = next((m for m in out if m != name and float(value) == 1.0 - float(scores[m])), None)
        if name in out or twin is None:
            continue
        shown = dict(out[twin])
        if shown["score"] is None:
            shown["text"] = f"{name}: no score — it is 1 − {twin}: " + shown["text"].split(" — ", 1)[1]
        else:
            shown["score"] = float(value)
            shown["text"] = f"{name} {float(value):.2f} (1 − {twin}) — " + shown["text"].split(" — ", 1)[1]
        out[name] = shown
    return out
