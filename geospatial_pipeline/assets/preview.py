"""Materialization metadata a person can read: tables with a schema rather than markdown or
JSON blobs, sizes in human units, links to open, warehouse tables described the way the
Dagster UI shows them (row count, table name, column schema), pictures inline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableMetadataValue,
    TableRecord,
    TableSchema,
)

from geospatial_pipeline.raster.quicklook import INLINE_LONG_SIDE, inline_png, markdown_image
from geospatial_pipeline.resources.warehouse import WarehouseResource
from geospatial_pipeline.warehouse.tables import ColumnType, Table

PREVIEW_ROWS = 20
# A page with many partitions' images gets heavy: a few small pictures per partition.
MAX_INLINE_IMAGES = 4
_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def human_bytes(size: int | float) -> str:
    """``6876725`` -> ``"6.9 MB"`` (decimal units, as object stores and file browsers say)."""
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1000 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def location(url: str) -> MetadataValue:
    """A link for s3:// and http(s) URLs, a path for anything local (``file://`` too)."""
    if url.startswith(("s3://", "http://", "https://", "gs://")):
        return MetadataValue.url(url)
    return MetadataValue.path(url.removeprefix("file://"))


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _column_type(values: Sequence[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "float"
    return "string"


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    limit: int = PREVIEW_ROWS,
) -> TableMetadataValue:
    """``rows`` (the first ``limit``) as a table whose schema is inferred from the values;
    ``columns`` fixes the columns (needed when there may be no row)."""
    names = list(columns) if columns is not None else list(rows[0]) if rows else []
    shown = [{name: _cell(row.get(name)) for name in names} for row in rows[:limit]]
    schema = TableSchema(
        columns=[TableColumn(name, _column_type([r[name] for r in shown])) for name in names]
    )
    return MetadataValue.table([TableRecord(r) for r in shown], schema=schema)


_TYPE_NAMES = {
    ColumnType.STRING: "string",
    ColumnType.BIGINT: "bigint",
    ColumnType.DOUBLE: "double",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.DATE: "date",
    ColumnType.TIMESTAMP: "timestamp",
    ColumnType.JSON: "json",
}


def column_schema(spec: Table) -> TableSchema:
    """A warehouse table's columns as Dagster shows them."""
    return TableSchema(
        columns=[
            TableColumn(
                column.name,
                _TYPE_NAMES[column.type],
                constraints=TableColumnConstraints(nullable=column.nullable),
            )
            for column in spec.columns
        ]
    )


def warehouse_table(spec: Table, warehouse: WarehouseResource, row_count: int) -> dict[str, Any]:
    """The metadata the UI reads off a table asset: its rows (the partition's), its fully
    qualified name, its columns, and which warehouse holds it."""
    return {
        "dagster/row_count": row_count,
        "dagster/table_name": warehouse.table_name(spec),
        "dagster/column_schema": column_schema(spec),
        "warehouse": warehouse.describe(),
    }


def inline_images(
    pictures: Sequence[tuple[str, bytes]], long_side: int = INLINE_LONG_SIDE
) -> MetadataValue:
    """Up to MAX_INLINE_IMAGES pictures (caption, PNG) in one markdown entry, each a small
    copy (at most ``long_side`` px, 256 colours) embedded as a data URI."""
    shown = pictures[:MAX_INLINE_IMAGES]
    parts = [
        f"**{caption}**\n\n{markdown_image(inline_png(png, long_side), caption)}"
        for caption, png in shown
    ]
    if len(pictures) > len(shown):
        parts.append(f"_{len(pictures) - len(shown)} more not shown_")
    return MetadataValue.md("\n\n".join(parts) if parts else "_(no picture)_")


def markdown_table(rows: Sequence[Mapping[str, Any]], limit: int = PREVIEW_ROWS) -> str:
    """A markdown table (prefer :func:`table`; kept for callers that embed one in text)."""
    if not rows:
        return "_(none)_"
    headers = list(rows[0].keys())
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    for row in rows[:limit]:
        cells = ("" if row.get(h) is None else str(row.get(h)).replace("|", "\\|") for h in headers)
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > limit:
        lines.append(f"\n_{len(rows) - limit} more not shown_")
    return "\n".join(lines)
