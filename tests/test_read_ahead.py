"""read_ahead: the next scene is read while the caller works on the current one, never
more than one ahead, in order, and a failed read surfaces at its own scene."""

from __future__ import annotations

import threading

import pytest

from geospatial_pipeline.raster.scene import read_ahead


def test_reads_the_next_key_while_the_caller_works_and_never_two_ahead() -> None:
    started: list[str] = []
    lock = threading.Lock()
    next_started = {k: threading.Event() for k in "abcd"}

    def read(key: str) -> str:
        with lock:
            started.append(key)
        next_started[key].set()
        return key.upper()

    seen = []
    for key, value in read_ahead(list("abcd"), read):
        seen.append((key, value))
        following = chr(ord(key) + 1)
        if following in next_started:
            # The caller has not asked for it yet, and it is being read already.
            assert next_started[following].wait(timeout=5), f"{following} not read ahead"
        with lock:
            # ... but nothing beyond it.
            assert started == list("abcd")[: min(len(seen) + 1, 4)]
    assert seen == [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")]


def test_a_failed_read_is_raised_at_its_key() -> None:
    def read(key: str) -> str:
        if key == "b":
            raise ValueError("cannot read b")
        return key

    got = []
    with pytest.raises(ValueError, match="cannot read b"):
        for key, _ in read_ahead(["a", "b", "c"], read):
            got.append(key)
    assert got == ["a"]


def test_nothing_to_read() -> None:
    assert list(read_ahead([], lambda key: key)) == []
