from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from geospatial_pipeline.errors import StorageError
from geospatial_pipeline.layout import Partition, band_key
from geospatial_pipeline.storage.keys import check_key, join_key, sanitize_component
from geospatial_pipeline.storage.object_store import LocalObjectStore


@pytest.mark.parametrize(
    "hostile",
    ["../../etc", "..", ".", "a/../../b", "/abs/path", "a\\..\\b", "x\x00y", "", "...", ".hidden"],
)
def test_hostile_ids_stay_inside_the_prefix(hostile: str) -> None:
    key = band_key("sentinel-2-l2a", Partition(dt.date(2020, 3, 2), "lake"), hostile, "red")
    assert key.startswith("raw/sentinel-2-l2a/2020-03-02/lake/")
    parts = key.split("/")
    assert len(parts) == 6
    assert ".." not in parts and "." not in parts
    check_key(key)


@pytest.mark.parametrize("hostile", ["../../etc", "..", "a/b", "", ".hidden", "x\x00y"])
def test_hostile_aoi_names_stay_inside_the_day(hostile: str) -> None:
    # The AOI is a key segment of its own now: a name must not climb out of the day or
    # reach another AOI's prefix.
    key = band_key("sentinel-2-l2a", Partition(dt.date(2020, 3, 2), hostile), "item", "red")
    parts = key.split("/")
    assert parts[:3] == ["raw", "sentinel-2-l2a", "2020-03-02"] and len(parts) == 6
    assert parts[3] not in ("..", ".", "", "lake") and parts[3] != hostile
    check_key(key)


def test_sanitize_keeps_real_ids_and_separates_collisions() -> None:
    assert sanitize_component("S2A_32TMT_20200302_1_L2A") == "S2A_32TMT_20200302_1_L2A"
    a, b = sanitize_component("a/b"), sanitize_component("a:b")
    assert a != b
    assert "/" not in a and ":" not in b


@pytest.mark.parametrize("bad", ["../x", "a//b", "/a", "a/./b", "a/"])
def test_check_key_refuses(bad: str) -> None:
    with pytest.raises(StorageError):
        check_key(bad)


def test_local_store_refuses_escape_and_publishes_atomically(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "root")
    with pytest.raises(StorageError):
        store.put_bytes("../outside", b"x")
    first = store.put_bytes(join_key("a", "b.bin"), b"hello")
    again = store.put_bytes("a/b.bin", b"hello")
    changed = store.put_bytes("a/b.bin", b"hello!")
    assert (first.written, again.written, changed.written) == (True, False, True)
    assert store.get_bytes("a/b.bin") == b"hello!"
    assert [o.key for o in store.list("a")] == ["a/b.bin"]
    assert not list((tmp_path / "root" / "a").glob(".*"))  # no temporary left behind
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize("hostile", ["a/b", "../../etc", "x y", "caf\u00e9", ".hidden", "S" * 300])
def test_encoded_component_never_equals_another_values(hostile: str) -> None:
    # A remote party that knows the encoding can send the encoded form as a value of its
    # own: it must still get a key of its own, not the hostile value's.
    encoded = sanitize_component(hostile)
    assert encoded != hostile
    assert sanitize_component(encoded) != encoded
    # And values differing only beyond the kept length do not share a key either.
    assert sanitize_component(hostile + "1") != sanitize_component(hostile + "2")
