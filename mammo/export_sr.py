"""A result as a Comprehensive 3D SR with a TID 1500 Measurement Report (highdicom): the
image-level scores and QC flags, and per finding its outline (POLYLINE SCOORD on the source
image), area, largest diameter and P(malignant). See `mammo.export_dicom` for the rules both
DICOM outputs follow (DICOM input only; identifiers copied from the source, never invented)."""

from __future__ import annotations

from typing import Any

from mammo.export_dicom import (
    AREA,
    DIAMETER,
    FINDING_TYPES,
    MAMMOGRAM,
    MANUFACTURER,
    PRIVATE_SCHEME,
    PROBABILITY_OF_CANCER,
    QUALITY_CONTROL,
    SERIES_NUMBER_SR,
    Coded,
    check_source,
    outline_points,
    result_findings,
)
from mammo.io.meta import ImageMeta
from mammo.pipelines.base import Finding, Result

PIXELS = Coded("{pixels}", "UCUM", "pixels")  # an annotated unit of 1: areas and lengths counted in pixels
NO_UNITS = Coded("1", "UCUM", "no units")
SQUARE_MM = Coded("mm2", "UCUM", "square millimeter")
MM = Coded("mm", "UCUM", "millimeter")


def _score_code(name: str) -> Coded:
    """"malignant" is DICOM's Probability of cancer; other scores get a private code."""
    return PROBABILITY_OF_CANCER if name == "malignant" else Coded(f"score-{name}"[:16], PRIVATE_SCHEME,
                                                                    f"Probability {name}")


def _algorithm_id(result: Result) -> Any:
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(name=f"mammo {result.pipeline}"[:64],
                                         version=(result.weights_sha256 or "no weights")[:64])


def _measurement(name: Coded, value: float, unit: Coded, result: Result) -> Any:
    import highdicom as hd

    return hd.sr.Measurement(name=name.concept(), value=float(value), unit=unit.concept(),
                             algorithm_id=_algorithm_id(result))


def _qc_evaluations(meta: ImageMeta) -> list[Any]:
    import highdicom as hd

    return [hd.sr.QualitativeEvaluation(name=QUALITY_CONTROL.concept(),
                                        value=Coded(flag[:16], PRIVATE_SCHEME, flag.replace("_", " ")).concept())
            for flag in meta.qc]


def image_group(source: Any, meta: ImageMeta, result: Result) -> Any:
    """TID 1501: the image-level scores (unitless probabilities) and the QC flags."""
    import highdicom as hd

    measurements = [_measurement(_score_code(name), value, NO_UNITS, result)
                    for name, value in sorted(result.scores.items())]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="image scores"),
        algorithm_id=_algorithm_id(result), measurements=measurements or None,
        qualitative_evaluations=_qc_evaluations(meta) or None,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)])


def finding_group(source: Any, cls: str, finding: Finding, result: Result) -> Any:
    """TID 1410: one finding's outline, sizes and P(malignant)."""
    import highdicom as hd

    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=outline_points(finding),
                               source_image=hd.sr.SourceImageForRegion.from_source_image(source))
    if finding.area_mm2 is not None and finding.diameter_mm is not None:
        sizes = [(AREA, finding.area_mm2, SQUARE_MM), (DIAMETER, finding.diameter_mm, MM)]
    else:
        sizes = [(AREA, finding.area_px, PIXELS), (DIAMETER, finding.diameter_px, PIXELS)]
    measurements = [_measurement(name, value, unit, result) for name, value, unit in sizes]
    if finding.malignancy is not None:
        measurements.append(_measurement(PROBABILITY_OF_CANCER, finding.malignancy, NO_UNITS, result))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=finding.label or cls),
        referenced_region=region, finding_type=FINDING_TYPES[cls].concept(), algorithm_id=_algorithm_id(result),
        measurements=measurements)


def structured_report(source: Any, meta: ImageMeta, result: Result, evidence: list[Any] | None = None) -> Any:
    """The Comprehensive 3D SR of `result` on `source` (`mammo.export_dicom.read_source`);
    `evidence`: further datasets it refers to (the SEG written beside it).

    Raises:
        DicomOutputError: not a DICOM input.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    check_source(meta)
    groups = [image_group(source, meta, result)]
    groups += [finding_group(source, cls, finding, result) for cls, finding in result_findings(result, meta)]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=f"mammo {result.pipeline}"[:64], manufacturer_name=MANUFACTURER))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=MAMMOGRAM.concept(), imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(
        evidence=[source, *(evidence or [])], content=report[0], series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER_SR, sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        series_description=f"mammo {result.pipeline} findings"[:64])
