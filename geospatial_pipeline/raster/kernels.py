"""The per-pixel part of the transform as one compiled pass (numba).

Written as numpy expressions, masking, offset correction, the indices and the statistics
take some thirty passes over grid-sized arrays plus their temporaries: ~40x a plain copy
of the same data (measured by ``benchmarks/transform.py``). Here every grid pixel is read
once and every output written once.

Inputs are placed on the grid without copying: a band whose pixels lie on the grid
(same CRS, same pixel size, edges on grid edges) is passed as the decoded array with the
grid row/column of its top-left pixel; the SCL raster likewise with an integer
upsampling factor ``k`` (20 m classes on a 10 m grid). Anything else was resampled onto
the whole grid beforehand (offsets 0, k 1).

Float arithmetic is float32 in the same order as the numpy definition in
:mod:`geospatial_pipeline.raster.reflectance`, so results are bit-identical to it
(``tests/test_kernels.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit as _numba_njit


def njit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """numba's ``njit`` with its on-disk cache when it has somewhere to write one: numba
    refuses ``cache=True`` at import when neither the package directory nor
    ``NUMBA_CACHE_DIR`` is writable (a read-only image without a writable cache dir);
    then the kernels compile once per process instead of failing to import."""

    def decorate(func: Callable[..., Any]) -> Any:
        try:
            return _numba_njit(cache=True, **options)(func)
        except RuntimeError:
            return _numba_njit(cache=False, **options)(func)

    return decorate


# Per-class flags (a 256-entry table indexed by the SCL value).
F_NO_DATA = np.uint8(1)  # SCL 0
F_INVALID = np.uint8(2)  # masked out (configurable classes)
F_CLOUD = np.uint8(4)
F_SHADOW = np.uint8(8)
F_LAND = np.uint8(16)  # the offset test's evidence (red, green, NIR below the offset)
F_DARK = np.uint8(32)  # the offset test's dark floor (red histogram)
F_NEGATIVE_OK = np.uint8(64)  # negative reflectance is physical: not in the quality gate

# Output layer order and counter slots.
LAYERS = ("red", "green", "blue", "nir", "ndvi", "ndwi")
(
    C_INSIDE,
    C_DATA,
    C_VALID,
    C_CLOUD,
    C_SHADOW,
    C_NEGATIVE,  # negative reflectance values of gated pixels (not F_NEGATIVE_OK)
    C_GATED,  # valid pixels not F_NEGATIVE_OK
    C_POSITIVE,  # positive red, green, NIR DNs of valid F_LAND pixels
    C_BELOW,  # of them below the offset
) = range(9)
N_COUNTS = 9
HIST_BINS = 65536


def class_flags(
    invalid: tuple[int, ...],
    cloud: tuple[int, ...],
    shadow: tuple[int, ...],
    land: tuple[int, ...],
    dark: tuple[int, ...],
    negative_ok: tuple[int, ...],
) -> np.ndarray:
    table = np.zeros(256, dtype=np.uint8)
    table[0] |= F_NO_DATA
    for classes, flag in (
        (invalid, F_INVALID),
        (cloud, F_CLOUD),
        (shadow, F_SHADOW),
        (land, F_LAND),
        (dark, F_DARK),
        (negative_ok, F_NEGATIVE_OK),
    ):
        table[list(classes)] |= flag
    return table


@njit(nogil=True, inline="always")
def _row_span(shape, origin, r, lo, hi):  # type: ignore[no-untyped-def]
    """Grid columns [lo, hi) of row ``r`` covered by a band placed at ``origin``,
    intersected with the given [lo, hi)."""
    if not 0 <= r - origin[0] < shape[0]:
        return 0, 0
    return max(lo, origin[1]), max(max(lo, origin[1]), min(hi, origin[1] + shape[1]))


@njit(nogil=True, inline="always")
def _bin(value):  # type: ignore[no-untyped-def]
    """Histogram bin of a DN: itself for integers (the rounding folds away), rounded and
    clipped for resampled floats."""
    v = np.int64(value)
    if v != value:
        v = np.int64(np.rint(value))
    return min(HIST_BINS - 1, max(0, v))


@njit(nogil=True, inline="always")
def _pixel(f, inside, x0, x1, x2, x3, nodata, has_blue):  # type: ignore[no-untyped-def]
    """(has data, valid) of one pixel, branch-free (bitwise &) so loops vectorize."""
    nd_r, nd_g, nd_b, nd_n = nodata
    has = (
        inside
        & ((f & F_NO_DATA) == 0)
        & (x0 == x0)
        & (x0 != nd_r)
        & (x1 == x1)
        & (x1 != nd_g)
        & ((x2 == x2) & (x2 != nd_b) | (not has_blue))
        & (x3 == x3)
        & (x3 != nd_n)
    )
    return has, has & ((f & F_INVALID) == 0)


@njit(nogil=True, inline="always")
def _tally(tally, f, inside, x0, x1, x2, x3, nodata, has_blue, below_dn):  # type: ignore[no-untyped-def]
    """One pixel's (valid, gated) and ``tally`` plus its counts: (data, valid, cloud,
    shadow, gated, positive land DNs, land DNs below the offset), branch-free so loops
    vectorize. The offset evidence leaves blue out (``reflectance`` says why)."""
    has, ok = _pixel(f, inside, x0, x1, x2, x3, nodata, has_blue)
    land = ok & ((f & F_LAND) != 0)
    p0, p1, p3 = land & (x0 > 0), land & (x1 > 0), land & (x3 > 0)
    below = (p0 & (x0 < below_dn)) + (p1 & (x1 < below_dn)) + (p3 & (x3 < below_dn))
    gated = ok & ((f & F_NEGATIVE_OK) == 0)
    data, valid, cloud, shadow, gated_total, pos, below_total = tally
    return (
        ok,
        gated,
        (
            data + has,
            valid + ok,
            cloud + (has & ((f & F_CLOUD) != 0)),
            shadow + (has & ((f & F_SHADOW) != 0)),
            gated_total + gated,
            pos + p0 + p1 + p3,
            below_total + below,
        ),
    )


@njit(nogil=True, error_model="numpy")
def scene_pass(  # type: ignore[no-untyped-def]
    red,
    green,
    blue,
    nir,
    has_blue,
    band_origin,  # int64 (4, 2): grid row, col of each band's pixel (0, 0)
    nodata,  # tuple of 4 scalars of each band's dtype: no data (NaN: resampled bands)
    scl,
    scl_origin,  # int64 (2,)
    scl_k,
    flags,  # uint8 (256,) from class_flags
    spans,  # (row_ptr, c0, c1) from polygon_spans: the AOI's pixels
    offset_dn,  # float32
    scale,  # float32
    below_dn,  # the offset test's threshold (DN), in the bands' dtype
    write,  # compute the layers (False: mask, counts and evidence only)
    evidence,  # fill ``hist`` with the dark-surface DNs
    out,  # float32 (6, H, W) in LAYERS order; unused when not ``write``
    valid_out,  # bool (H, W)
    hist,  # int64 (65536,): red DNs of valid F_DARK pixels
    counts,  # int64 (N_COUNTS,)
):
    height, width = valid_out.shape
    row_ptr, span_c0, span_c1 = spans
    nan = np.float32(np.nan)
    zero = np.float32(0.0)
    inf32 = np.float32(np.inf)
    # SCL column of each grid column (-1 outside the raster): one division per column.
    scl_h, scl_w = scl.shape
    scl_cols = np.empty(width, dtype=np.int64)
    for c in range(width):
        j = (c - scl_origin[1]) // scl_k
        scl_cols[c] = j if 0 <= j < scl_w else -1
    row_flags = np.empty(width, dtype=np.uint8)
    ins = np.empty(width, dtype=np.bool_)
    last_scl_row = -2
    n_inside = n_negative = 0
    tally = (0, 0, 0, 0, 0, 0, 0)  # data, valid, cloud, shadow, gated, positive, below

    for r in range(height):
        i = (r - scl_origin[0]) // scl_k
        i = i if 0 <= i < scl_h else -1
        if i != last_scl_row:  # k rows of the grid share one SCL row
            for c in range(width):
                j = scl_cols[c]
                row_flags[c] = flags[scl[i, j]] if i >= 0 and j >= 0 else flags[0]
            last_scl_row = i
        ins[:] = False
        for s in range(row_ptr[r], row_ptr[r + 1]):
            ins[span_c0[s] : span_c1[s]] = True
            n_inside += span_c1[s] - span_c0[s]
        vrow = valid_out[r]
        # Columns where every band has a pixel in this row.
        lo, hi = _row_span(red.shape, band_origin[0], r, 0, width)
        lo, hi = _row_span(green.shape, band_origin[1], r, lo, hi)
        if has_blue:
            lo, hi = _row_span(blue.shape, band_origin[2], r, lo, hi)
        lo, hi = _row_span(nir.shape, band_origin[3], r, lo, hi)
        vrow[:lo] = False
        vrow[hi:] = False
        if write:
            for layer in range(len(LAYERS)):
                out[layer, r, :lo] = nan
                out[layer, r, hi:] = nan
        if hi <= lo:
            continue
        # Row slices (C-contiguous, non-negative indices): the loops below vectorize.
        rr = red[r - band_origin[0, 0], lo - band_origin[0, 1] : hi - band_origin[0, 1]]
        gg = green[r - band_origin[1, 0], lo - band_origin[1, 1] : hi - band_origin[1, 1]]
        bb = (
            blue[r - band_origin[2, 0], lo - band_origin[2, 1] : hi - band_origin[2, 1]]
            if has_blue
            else rr
        )
        nn = nir[r - band_origin[3, 0], lo - band_origin[3, 1] : hi - band_origin[3, 1]]
        fl = row_flags[lo:hi]
        ir = ins[lo:hi]
        vr = vrow[lo:hi]
        # Mask, counts and the offset test's counts; with ``write`` the layers in the same
        # loop, so each input is loaded once.
        if write:
            o_r, o_g, o_b = out[0, r, lo:hi], out[1, r, lo:hi], out[2, r, lo:hi]
            o_n, o_v, o_w = out[3, r, lo:hi], out[4, r, lo:hi], out[5, r, lo:hi]
            for c in range(hi - lo):
                f = fl[c]
                x0, x1, x2, x3 = rr[c], gg[c], bb[c], nn[c]
                ok, gated, tally = _tally(
                    tally, f, ir[c], x0, x1, x2, x3, nodata, has_blue, below_dn
                )
                vr[c] = ok
                red_ = (np.float32(x0) - offset_dn) * scale
                green_ = (np.float32(x1) - offset_dn) * scale
                blue_ = (np.float32(x2) - offset_dn) * scale
                nir_ = (np.float32(x3) - offset_dn) * scale
                n_negative += (
                    (gated & (red_ < zero))
                    + (gated & (green_ < zero))
                    + (gated & (blue_ < zero) & has_blue)
                    + (gated & (nir_ < zero))
                )
                ndvi = (nir_ - red_) / (nir_ + red_)
                ndwi = (green_ - nir_) / (green_ + nir_)
                ndvi_ok = ok & (np.abs(ndvi) < inf32) & (nir_ >= zero) & (red_ >= zero)
                ndwi_ok = ok & (np.abs(ndwi) < inf32) & (green_ >= zero) & (nir_ >= zero)
                o_r[c] = red_ if ok else nan
                o_g[c] = green_ if ok else nan
                o_b[c] = blue_ if ok else nan
                o_n[c] = nir_ if ok else nan
                o_v[c] = ndvi if ndvi_ok else nan
                o_w[c] = ndwi if ndwi_ok else nan
        else:
            for c in range(hi - lo):
                f = fl[c]
                x0, x1, x2, x3 = rr[c], gg[c], bb[c], nn[c]
                ok, _, tally = _tally(tally, f, ir[c], x0, x1, x2, x3, nodata, has_blue, below_dn)
                vr[c] = ok
        if evidence:
            for c in range(hi - lo):  # a scatter: scalar, dark valid pixels only
                if vr[c] and fl[c] & F_DARK and rr[c] > 0:
                    hist[_bin(rr[c])] += 1

    counts[C_INSIDE] += n_inside
    counts[C_DATA] += tally[0]
    counts[C_VALID] += tally[1]
    counts[C_CLOUD] += tally[2]
    counts[C_SHADOW] += tally[3]
    counts[C_NEGATIVE] += n_negative
    counts[C_GATED] += tally[4]
    counts[C_POSITIVE] += tally[5]
    counts[C_BELOW] += tally[6]


@njit(nogil=True)
def polygon_spans(xs, ys, starts, height, width):  # type: ignore[no-untyped-def]
    """The pixels of a ``height`` x ``width`` grid whose centre lies inside the rings
    (even-odd rule, so holes and multipolygon parts need no special case), as column
    spans per row: row ``r`` has ``[c0[s], c1[s])`` for ``s`` in
    ``range(row_ptr[r], row_ptr[r + 1])``.

    ``xs``/``ys``: vertices in pixel units (column, row), rings one after the other from
    ``starts[i]`` to ``starts[i + 1]``, closed or not. A scanline through each row's
    centre, an active-edge sweep; a vertex on it counts for the edge that starts there
    (half-open in y), and a centre exactly on an edge is inside on a span's left end,
    outside on its right: what GDAL's rasterizer does (``tests/test_kernels.py``).
    """
    n_edges = 0
    for ring in range(len(starts) - 1):
        n_edges += starts[ring + 1] - starts[ring]
    # Edges as (ylow, yhigh, x at ylow, dx/dy), sorted by ylow for the sweep.
    e_y0 = np.empty(n_edges)
    e_y1 = np.empty(n_edges)
    e_x0 = np.empty(n_edges)
    e_slope = np.empty(n_edges)
    n = 0
    for ring in range(len(starts) - 1):
        s, e = starts[ring], starts[ring + 1]
        for i in range(s, e):
            j = i + 1 if i + 1 < e else s
            x1, y1, x2, y2 = xs[i], ys[i], xs[j], ys[j]
            if y1 == y2:
                continue  # horizontal: never crossed by a scanline in its interior
            if y1 > y2:
                x1, y1, x2, y2 = x2, y2, x1, y1
            e_y0[n], e_y1[n], e_x0[n] = y1, y2, x1
            e_slope[n] = (x2 - x1) / (y2 - y1)
            n += 1
    order = np.argsort(e_y0[:n])
    active = np.empty(n, dtype=np.int64)
    n_active = 0
    next_edge = 0
    crossings = np.empty(n)
    row_ptr = np.zeros(height + 1, dtype=np.int64)
    c0s = np.empty(max(16, 2 * height), dtype=np.int64)
    c1s = np.empty(max(16, 2 * height), dtype=np.int64)
    n_spans = 0
    for r in range(height):
        row_ptr[r] = n_spans
        y = r + 0.5
        while next_edge < n and e_y0[order[next_edge]] <= y:
            active[n_active] = order[next_edge]
            n_active += 1
            next_edge += 1
        k = 0
        m = 0
        for a in range(n_active):
            edge = active[a]
            if e_y1[edge] <= y:
                continue  # finished: drop it
            active[k] = edge
            k += 1
            crossings[m] = e_x0[edge] + (y - e_y0[edge]) * e_slope[edge]
            m += 1
        n_active = k
        if m < 2:
            continue
        xs_row = np.sort(crossings[:m])
        for p in range(0, m - 1, 2):
            c0 = max(0, int(np.ceil(xs_row[p] - 0.5)))
            c1 = min(width, int(np.ceil(xs_row[p + 1] - 0.5)))
            if c1 <= c0:
                continue
            if n_spans == len(c0s):
                c0s = np.concatenate((c0s, np.empty_like(c0s)))
                c1s = np.concatenate((c1s, np.empty_like(c1s)))
            c0s[n_spans], c1s[n_spans] = c0, c1
            n_spans += 1
    row_ptr[height] = n_spans
    return row_ptr, c0s[:n_spans].copy(), c1s[:n_spans].copy()


@njit(nogil=True)
def spans_to_mask(row_ptr, c0, c1, out):  # type: ignore[no-untyped-def]
    for r in range(out.shape[0]):
        for s in range(row_ptr[r], row_ptr[r + 1]):
            out[r, c0[s] : c1[s]] = 1


@njit(nogil=True)
def nanmedian_layers(stack, out):  # type: ignore[no-untyped-def]
    """Per-pixel median of the non-NaN values of ``stack`` (layers, rows, cols) into
    ``out``; NaN where no layer has a value.

    np.nanmedian over a few layers sorts through masked arrays: ~0.4 s per layer of 4 Mpx
    here, more than the transform of the scene. The layers of a pixel are few, so an
    insertion sort per pixel does it in one pass. Even counts average the two middle
    values in float32 as numpy does, so the result is bit-identical to it
    (``tests/test_kernels.py``).
    """
    n, height, width = stack.shape
    buf = np.empty(n, dtype=stack.dtype)
    two = stack.dtype.type(2)
    for r in range(height):
        for c in range(width):
            k = 0
            for i in range(n):
                v = stack[i, r, c]
                if v == v:
                    j = k
                    while j > 0 and buf[j - 1] > v:
                        buf[j] = buf[j - 1]
                        j -= 1
                    buf[j] = v
                    k += 1
            if k == 0:
                out[r, c] = np.nan
            elif k % 2 == 1:
                out[r, c] = buf[k // 2]
            else:
                out[r, c] = (buf[k // 2 - 1] + buf[k // 2]) / two
