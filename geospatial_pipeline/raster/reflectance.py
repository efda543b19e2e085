"""Surface reflectance from Sentinel-2 L2A digital numbers, with the BOA offset decided
per scene from metadata and checked against the pixels.

Processing baseline 04.00 (Jan 2022) and later add a radiometric offset of +1000 DN
(BOA_ADD_OFFSET = -1000) precisely so that negative surface reflectance survives: dark
water routinely has slightly negative BOA in NIR (and sometimes blue/green), encoded as
DN < 1000. Earth Search sets ``earthsearch:boa_offset_applied: true`` when it already
removed the offset from the COGs (values harmonized with older baselines), and reports
``raster:bands`` scale/offset; both are known to be wrong for some items (Earth Search
issues #66 and #71). So the metadata gives a first answer and the pixels may overrule it,
but only with evidence an honest scene cannot produce. It is gathered on land
(``EVIDENCE_SCL_CLASSES``: vegetation, bare soil) in red, green and NIR, where surface
reflectance is at least a few percent. Water, dark-area and shadow pixels are left out
(their BOA may truly be negative), and so are blue (aerosol over-correction drives it to
zero or below over dark dense vegetation) and the snow and unclassified classes (SCL
confuses them with cloud, shadow and water).

- Offset present in the DNs means no land pixel lies below 1000 DN in those bands. If
  more than ``ABSENT_SHARE`` of at least ``MIN_EVIDENCE_SAMPLES`` such band values are
  below 1000 DN, removing the offset would make land negative: the pixels say *absent*.
- Vegetation (``DARK_SCL_CLASSES``) has red reflectance of a few percent. If at most
  ``PRESENT_MAX_SHARE`` of the land values are below 1000 DN but the 5th percentile of
  vegetation red over at least ``MIN_DARK_PIXELS`` pixels is below ``DARK_CEILING_DN``
  (reflectance < 0.06 above the floor), vegetation is sitting on a +1000 floor: the
  pixels say *present*.
- Otherwise (e.g. a bright desert, or a lake with little land) the pixels are
  inconclusive and the metadata decides.

The negative-reflectance quality gate likewise counts only classes where negative
reflectance is not physical (all valid classes but ``NEGATIVE_OK_SCL_CLASSES``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

BOA_OFFSET_DN = 1000
DEFAULT_SCALE = 0.0001
# Land band values below the floor in a harmonized scene: most vegetation red and green.
# In an offset-carrying one only mislabelled pixels, e.g. open water inside a 20 m SCL
# pixel labelled vegetation on a shore; 5 % leaves room for those.
ABSENT_SHARE = 0.05
PRESENT_MAX_SHARE = 0.005
MIN_EVIDENCE_SAMPLES = 300  # band values: 100 land pixels x 3 bands
MIN_DARK_PIXELS = 100
DARK_CEILING_DN = 1600
EVIDENCE_SCL_CLASSES = (4, 5)  # vegetation, not vegetated (bare soil, rock, built-up)
DARK_SCL_CLASSES = (4,)  # vegetation: red of a few percent, never below zero
# Dark area pixels, cloud shadows, water: their BOA may truly be negative.
NEGATIVE_OK_SCL_CLASSES = (2, 3, 6)

Verdict = Literal["present", "absent", "inconclusive"]


@dataclass(frozen=True)
class OffsetDecision:
    processing_baseline: str | None
    boa_offset_applied_flag: bool | None
    raster_offset: float | None
    metadata_offset_present: bool
    pixel_verdict: Verdict
    share_below_offset: float  # of the land band values (``OffsetEvidence``)
    evidence_values: int
    dark_p5_dn: float | None
    dark_pixels: int
    offset_dn: int  # what is subtracted from the DNs
    decided_by: Literal["metadata", "pixels"]
    disagreement: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _baseline(value: str | None) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in (value or "").split("."))
    except ValueError:
        return ()


def metadata_offset_present(baseline: str | None, flag: bool | None) -> bool:
    """What the metadata claims: do the DNs still carry ESA's +1000?"""
    if not _baseline(baseline) or _baseline(baseline) < (4, 0):
        return False
    # The flag says Earth Search already subtracted it; without the flag, ESA's DNs stand.
    return flag is not True


class OffsetEvidence:
    """The pixel test's evidence, accumulated scene by scene or strip by strip in bounded
    memory (the transform kernel fills it): ``n`` positive red, green and NIR DNs of valid
    land pixels (``EVIDENCE_SCL_CLASSES``), ``below`` of them under ``BOA_OFFSET_DN``, and
    a 1-DN histogram of the red DNs of valid vegetation pixels (``DARK_SCL_CLASSES``), for
    their 5th percentile (the smallest DN with at least 5% of them at or below it)."""

    def __init__(self) -> None:
        self.n = 0
        self.below = 0
        self.dark_hist = np.zeros(65536, dtype=np.int64)

    def verdict(self) -> tuple[Verdict, float, float | None, int, int]:
        n_dark = int(self.dark_hist.sum())
        share_below = self.below / self.n if self.n else 0.0
        dark_p5 = None
        if n_dark:
            cumulative = np.cumsum(self.dark_hist)
            dark_p5 = float(np.searchsorted(cumulative, 0.05 * n_dark))
        if self.n < MIN_EVIDENCE_SAMPLES:
            return "inconclusive", share_below, dark_p5, n_dark, self.n
        if share_below > ABSENT_SHARE:
            return "absent", share_below, dark_p5, n_dark, self.n
        if (
            share_below <= PRESENT_MAX_SHARE
            and n_dark >= MIN_DARK_PIXELS
            and dark_p5 is not None
            and dark_p5 < DARK_CEILING_DN
        ):
            return "present", share_below, dark_p5, n_dark, self.n
        return "inconclusive", share_below, dark_p5, n_dark, self.n


def decide_from_evidence(
    baseline: str | None, flag: bool | None, raster_offset: float | None, evidence: OffsetEvidence
) -> OffsetDecision:
    return _decision(baseline, flag, raster_offset, *evidence.verdict())


def _decision(
    baseline: str | None,
    flag: bool | None,
    raster_offset: float | None,
    verdict: Verdict,
    share: float,
    dark_p5: float | None,
    n_dark: int,
    n_values: int,
) -> OffsetDecision:
    meta = metadata_offset_present(baseline, flag)
    pixels_say = {"present": True, "absent": False}.get(verdict)
    disagree = pixels_say is not None and pixels_say != meta
    present = pixels_say if pixels_say is not None else meta
    return OffsetDecision(
        processing_baseline=baseline,
        boa_offset_applied_flag=flag,
        raster_offset=raster_offset,
        metadata_offset_present=meta,
        pixel_verdict=verdict,
        share_below_offset=round(share, 6),
        evidence_values=n_values,
        dark_p5_dn=None if dark_p5 is None else round(dark_p5, 1),
        dark_pixels=n_dark,
        offset_dn=BOA_OFFSET_DN if present else 0,
        decided_by="pixels" if disagree else "metadata",
        disagreement=disagree,
    )
