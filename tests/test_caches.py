"""appkit.caches: the byte-bounded LRU store and its budget, without a Streamlit server."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from appkit import caches


def array(megabytes: float) -> np.ndarray:
    return np.zeros(int(megabytes * 2**20), np.uint8)


def test_store_evicts_least_recently_used_by_bytes():
    store = caches.AnalysisStore(max_bytes=10 * 2**20)
    for name in "abcd":
        store.put((name,), array(3))
    assert len(store) == 3 and store.get(("a",)) is None  # 12 MB > 10: the oldest went
    assert store.get(("b",)) is not None  # now the most recently used
    store.put(("e",), array(3))
    assert store.get(("c",)) is None and store.get(("b",)) is not None
    assert store.nbytes == 9 * 2**20


def test_store_remeasures_values_that_grow_on_read():
    class Growing:
        def __init__(self):
            self.nbytes = 2**20

    store = caches.AnalysisStore(max_bytes=4 * 2**20)
    grows = Growing()
    store.put(("grows",), grows)
    store.put(("other",), array(2))
    grows.nbytes = 3 * 2**20  # its caches filled while it was explored
    assert store.get(("grows",)) is grows  # measured again: 5 MB > 4
    assert store.get(("other",)) is None and len(store) == 1


def test_store_keeps_the_latest_value_even_over_budget_and_caps_entries():
    store = caches.AnalysisStore(max_bytes=2**20, max_items=2)
    store.put(("huge",), array(5))
    assert store.get(("huge",)) is not None  # alone over budget, but in use
    store.put(("small",), array(0.1))
    assert store.get(("huge",)) is None  # over budget with another: dropped
    for name in "xyz":
        store.put((name,), array(0.01))
    assert len(store) == 2


def test_approximate_nbytes_walks_dataclasses_and_containers():
    @dataclasses.dataclass
    class Result:
        sweep: np.ndarray
        rows: list

    result = Result(array(1), [{"dice": 0.5, "id": "a"}] * 3)
    assert 2**20 < caches.approximate_nbytes(result) < 2**20 + 10_000


@pytest.mark.parametrize(
    ("value", "expected"), [(None, 512), ("256", 256), ("0.5", 0.5), ("lots", 512)]
)
def test_cache_budget_comes_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(caches.CACHE_MB_ENV, raising=False)
    else:
        monkeypatch.setenv(caches.CACHE_MB_ENV, value)
    assert caches.cache_bytes() == int(expected * 2**20)


def test_store_counts_what_values_grew_after_they_were_put():
    class Growing:  # an analysis whose caches fill as a session explores it
        def __init__(self):
            self.nbytes = 2**20

    store = caches.AnalysisStore(max_bytes=4 * 2**20)
    explored = Growing()
    store.put(("explored",), explored)
    explored.nbytes = 3 * 2**20  # grown after put, never read from the store again
    store.put(("new",), array(2))  # measured again: 3 + 2 MB > 4, the older goes
    assert store.get(("explored",)) is None and store.nbytes == 2 * 2**20
