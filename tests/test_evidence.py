"""Score evidence (`mammo.evidence`), image acquisition (`mammo.io.acquisition`) and the manifest's
`evidence` key: what a user reads beside a score, and when no number is shown."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mammo.evidence import EvidenceError, parse_item, result_evidence, score_evidence
from mammo.io import read_image
from mammo.io.acquisition import acquisition_from_tags, check_acquisition
from mammo.weights import ManifestError, evidence_for, load_manifest, manifest_path, parse_entry

SC = "1.2.840.10008.5.1.4.1.1.7"
DIGITAL_MG = "1.2.840.10008.5.1.4.1.1.1.2"


def item(**changes) -> dict:
    base = {"source": "film", "dataset": "ddsm-films", "split": "test", "auc": 0.83, "ci95": [0.77, 0.88],
            "n": 138, "n_pos": 43, "command": "python -m training.measure_scores --entry glam-joint"}
    return {**base, **changes}


def test_validated_score_carries_its_auc():
    shown = score_evidence("malignant", 0.71, (parse_item(item(), "t"),), "film")
    assert shown["status"] == "validated" and shown["score"] == 0.71
    assert shown["text"] == "malignant 0.71 — test AUC 0.83 (0.77–0.88) on DDSM film"


def test_other_source_is_not_validated():
    measured = (parse_item(item(), "t"), parse_item(item(source="cesm", dataset="cdd-cesm-subtracted"), "t"))
    shown = score_evidence("malignant", 0.71, measured, "digital")
    assert shown["status"] == "not_validated" and shown["score"] == 0.71
    assert shown["text"].endswith("; not validated on digital") and "CDD-CESM subtracted" in shown["text"]
    unknown = score_evidence("malignant", 0.71, measured, None)
    assert "unknown" in unknown["text"] and unknown["score"] == 0.71


def test_chance_level_classifier_shows_no_number():
    chance = (parse_item(item(auc=0.45, ci95=[0.26, 0.63], dataset="mias"), "t"),)
    for acquisition in ("film", "digital", None):
        shown = score_evidence("malignant", 0.9, chance, acquisition)
        assert shown["score"] is None and shown["status"] == "not_better_than_chance"
        assert "0.90" not in shown["text"] and "not better than chance" in shown["text"]


def test_mixed_measurements_on_one_source():
    measured = (parse_item(item(), "t"), parse_item(item(dataset="mias", auc=0.6, ci95=[0.4, 0.8]), "t"))
    shown = score_evidence("malignant", 0.5, measured, "film")
    assert shown["status"] == "mixed" and shown["score"] == 0.5 and "mini-MIAS" in shown["text"]


@pytest.mark.parametrize("changes, problem", [
    ({"source": "mri"}, "source"), ({"auc": 0.95}, "outside"), ({"n_pos": 0}, "positives"),
    ({"ci95": [0.7]}, "ci95"), ({"split": ""}, "split"), ({"auc": True}, "auc"),
])
def test_malformed_evidence_is_refused(changes, problem):
    with pytest.raises(EvidenceError, match=problem):
        parse_item(item(**changes), "entry 'x'.evidence.malignant[0]")


def _entry_with(evidence) -> dict:
    raw = yaml.safe_load(manifest_path().read_text())["entries"][0]
    return {**raw, "evidence": evidence}


def test_manifest_evidence_is_typed_and_checked():
    raw = _entry_with({raw_class: [item()] for raw_class in
                       yaml.safe_load(manifest_path().read_text())["entries"][0]["classes"][:1]})
    entry = parse_entry(raw)
    (name,) = entry.evidence
    assert entry.evidence[name][0].auc == 0.83 and entry.evidence[name][0].ci95 == (0.77, 0.88)
    with pytest.raises(ManifestError, match="not one of the classes"):
        parse_entry(_entry_with({"no-such-class": [item()]}))
    with pytest.raises(ManifestError, match="one measurement per"):
        parse_entry(_entry_with({entry.classes[0]: [item(), item()]}))


def test_evidence_found_by_the_results_weights_hash(tmp_path):
    """A result names its weights by full sha256 or by '+'-joined 16-hex prefixes (tiryaki, deepmica)."""
    entries = yaml.safe_load(manifest_path().read_text())["entries"]
    first, second = entries[0], entries[1]
    first["evidence"] = {first["classes"][0]: [item()]}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"entries": entries}))
    assert evidence_for(first["sha256"], path)[first["classes"][0]][0].dataset == "ddsm-films"
    joined = f"{second['sha256'][:16]}+{first['sha256'][:16]}"
    assert first["classes"][0] in evidence_for(joined, path)
    assert evidence_for(second["sha256"], path) == {} and evidence_for("", path) == {}
    shown = result_evidence({first["classes"][0]: 0.3, "other": 0.5}, evidence_for(joined, path), "film")
    assert set(shown) == {first["classes"][0]}


def test_shipped_manifest_evidence_parses():
    for entry in load_manifest().values():
        for name, measured in entry.evidence.items():
            assert name in entry.classes and all(0 < m.n_pos < m.n for m in measured)


@pytest.mark.parametrize("tags, expected", [
    ((["DERIVED", "PRIMARY", "SUBTRACTION"], DIGITAL_MG, None, "MG", "FOR PRESENTATION"), ("cesm", "ImageType")),
    ((["DERIVED", "SECONDARY"], SC, "WSD", "MG", None), ("film", "SOPClassUID")),
    ((None, None, "DF", "MG", None), ("film", "ConversionType")),
    ((["ORIGINAL", "PRIMARY"], DIGITAL_MG, None, "MG", "FOR PRESENTATION"), ("digital", "SOPClassUID")),
    ((None, None, None, "MG", "FOR PROCESSING"), ("digital", "PresentationIntentType")),
    ((None, None, None, "MG", None), (None, "")),
    (("ORIGINAL", "1.2.3", None, None, None), (None, "")),
])
def test_acquisition_rules(tags, expected):
    assert acquisition_from_tags(*tags) == expected


def test_acquisition_values_are_checked():
    assert check_acquisition(" Film ", "x") == "film"
    with pytest.raises(ValueError, match="acquisition must be one of"):
        check_acquisition("tomo", "labels.csv line 3")


def test_cbis_dicoms_read_as_digitised_film(cbis_dicoms):
    """The CBIS-DDSM files are Secondary Captures of scanned films (ConversionType WSD)."""
    _, meta = read_image(cbis_dicoms[0])
    assert meta.acquisition == "film" and meta.sources["acquisition"] == "SOPClassUID"
    assert meta.to_dict()["acquisition"] == "film"


def test_csv_dataset_acquisition_column(tmp_path):
    import cv2

    from mammo.datasets import load_dataset
    from mammo.errors import MammoInputError

    cv2.imwrite(str(tmp_path / "a.png"), np.random.default_rng(0).integers(0, 255, (64, 48), dtype=np.uint8))
    good = tmp_path / "good.csv"
    good.write_text("image_path,malignant_label,acquisition\na.png,1,digital\n")
    (sample,) = list(load_dataset("csv", good))
    assert sample.meta.acquisition == "digital" and sample.meta.sources["acquisition"] == "dataset"
    bad = tmp_path / "bad.csv"
    bad.write_text("image_path,acquisition\na.png,ultrasound\n")
    with pytest.raises(MammoInputError, match="line 2.*acquisition must be one of"):
        list(load_dataset("csv", bad))


def test_scores_json_carries_the_evidence(tmp_path, monkeypatch):
    from mammo.export import result_summary
    from mammo.io.meta import ImageMeta
    from mammo.pipelines.base import Result

    entries = yaml.safe_load(manifest_path().read_text())["entries"]
    entry = entries[0]
    entry["evidence"] = {entry["classes"][0]: [item()]}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"entries": entries}))
    monkeypatch.setenv("MAMMO_WEIGHTS_MANIFEST", str(path))
    name = entry["classes"][0]
    result = Result(scores={name: 0.4, "unmeasured": 0.2}, pipeline="x", weights_sha256=entry["sha256"])
    summary = result_summary(result, ImageMeta(acquisition="digital"))
    assert set(summary["evidence"]) == {name} and summary["scores"][name] == 0.4
    assert summary["evidence"][name]["status"] == "not_validated"
    assert "not validated on digital" in summary["evidence"][name]["text"]
    film = result_summary(result, ImageMeta(acquisition="film"))["evidence"][name]
    assert film["status"] == "validated" and film["text"].startswith(f"{name} 0.40 — test AUC 0.83")


def test_complement_of_a_withheld_score_is_withheld_too():
    """tiryaki-mass gives benign = 1 - malignant: hiding one number must hide both."""
    chance = {"malignant": (parse_item(item(auc=0.45, ci95=[0.26, 0.63]), "t"),)}
    malignant = 0.3
    shown = result_evidence({"malignant": malignant, "benign": 1.0 - malignant}, chance, "film")
    assert shown["malignant"]["score"] is None and shown["benign"]["score"] is None
    assert shown["benign"]["text"].startswith("benign: no score — it is 1 − malignant")
    good = {"malignant": (parse_item(item(), "t"),)}
    shown = result_evidence({"malignant": malignant, "benign": 1.0 - malignant}, good, "film")
    assert shown["benign"]["score"] == 0.7 and "(1 − malignant)" in shown["benign"]["text"]
    # an independent score is not a complement
    assert set(result_evidence({"malignant": 0.3, "benign": 0.2}, good, "film")) == {"malignant"}
