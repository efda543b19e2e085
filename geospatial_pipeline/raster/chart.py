"""An AOI's recent history at a glance: the daily NDVI median with its p10-p90 band above,
the valid and cloud fractions below, one PNG (deterministic: same rows, same bytes)."""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from geospatial_pipeline.errors import PipelineError

HISTORY_DAYS = 90
CHART_SIZE_PX = (640, 360)
_DPI = 100


def _value(row: Mapping[str, Any] | None, column: str) -> float:
    if row is None or row.get(column) is None:
        return math.nan
    return float(row[column])


def ndvi_history_png(
    rows: Sequence[Mapping[str, Any]], aoi: str, first_day: dt.date, last_day: dt.date
) -> bytes:
    """The chart of ``rows`` (``daily_aoi_stats`` rows of one AOI) over ``first_day`` to
    ``last_day``. Days without a row or without a usable scene are gaps, not zeros."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    if last_day < first_day:
        raise PipelineError(
            f"NDVI history of {aoi!r}: last_day {last_day.isoformat()} is before first_day "
            f"{first_day.isoformat()}"
        )
    by_day = {row["partition_date"]: row for row in rows if row.get("aoi", aoi) == aoi}
    days = [first_day + dt.timedelta(days=i) for i in range((last_day - first_day).days + 1)]
    series = {
        column: np.array([_value(by_day.get(d), column) for d in days])
        for column in (
            "ndvi_median",
            "ndvi_p10",
            "ndvi_p90",
            "valid_pixel_fraction",
            "cloud_fraction",
        )
    }
    x = np.array(days, dtype="datetime64[D]")

    width, height = CHART_SIZE_PX
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, layout="constrained")
    ndvi_axes, fraction_axes = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    # Lines join the days that have a value: most days have no usable scene.
    seen = np.isfinite(series["ndvi_median"])
    band = seen & np.isfinite(series["ndvi_p10"]) & np.isfinite(series["ndvi_p90"])
    ndvi_axes.fill_between(
        x[band],
        series["ndvi_p10"][band],
        series["ndvi_p90"][band],
        color="tab:green",
        alpha=0.25,
        lw=0,
        label="p10-p90",
    )
    ndvi_axes.plot(
        x[seen],
        series["ndvi_median"][seen],
        color="tab:green",
        marker="o",
        ms=3,
        lw=1.2,
        label="median",
    )
    ndvi_axes.set_ylim(-1.0, 1.0)
    ndvi_axes.set_ylabel("NDVI", fontsize=8)
    ndvi_axes.set_title(
        f"{aoi}: {first_day.isoformat()} to {last_day.isoformat()} "
        f"({int(seen.sum())} day(s) with NDVI)",
        fontsize=9,
    )
    ndvi_axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ndvi_axes.grid(alpha=0.3)

    for column, colour, label in (
        ("valid_pixel_fraction", "tab:blue", "valid"),
        ("cloud_fraction", "tab:gray", "cloud"),
    ):
        values = series[column]
        known = np.isfinite(values)
        fraction_axes.plot(
            x[known], values[known], color=colour, marker=".", ms=4, lw=1, label=label
        )
    fraction_axes.set_ylim(0.0, 1.0)
    fraction_axes.set_ylabel("fraction", fontsize=8)
    fraction_axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fraction_axes.grid(alpha=0.3)
    fraction_axes.set_xlim(x[0] - np.timedelta64(1, "D"), x[-1] + np.timedelta64(1, "D"))
    locator = AutoDateLocator()
    fraction_axes.xaxis.set_major_locator(locator)
    fraction_axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    for axes in (ndvi_axes, fraction_axes):
        axes.tick_params(labelsize=7)

    buffer = io.BytesIO()
    # No Software chunk: the same rows give the same bytes.
    FigureCanvasAgg(figure).print_png(buffer, metadata={"Software": None})
    return buffer.getvalue()
