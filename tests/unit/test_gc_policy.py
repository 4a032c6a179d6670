"""The GC_FREEZE policy (utils/gc_policy.py) with the real collector: survivors frozen, cycles freed after a thaw."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from utils.gc_policy import SurvivorFreezer, install_gc_policy


class Session:
    """Stands for a held session: a few tracked objects that live long."""

    def __init__(self) -> None:
        self.parts = [{"k": []}, []]


@pytest.fixture
def freezer() -> Iterator[SurvivorFreezer]:
    freezer = SurvivorFreezer(growth=2.0)
    freezer.start()
    try:
        yield freezer
    finally:
        freezer.stop()  # the pytest process's own objects go back to the collector


def test_a_full_collection_freezes_its_survivors_so_the_next_one_walks_only_what_is_new(freezer):
    held = [Session() for _ in range(2000)]
    gc.collect()
    assert len(gc.get_objects(generation=2)) < 500  # the sessions are not walked by later full collections
    assert gc.get_freeze_count() >= 4 * 2000
    del held


def test_frozen_objects_are_still_freed_by_refcounting(freezer):
    held = Session()
    gone = weakref.ref(held)
    gc.collect()
    assert gc.get_freeze_count() > 0
    del held
    assert gone() is None


def test_cycles_among_frozen_objects_wait_for_the_thaw_then_are_freed(freezer):
    cycles = [Session() for _ in range(1000)]
    probes = [weakref.ref(s) for s in cycles[:10]]
    gc.collect()  # frozen
    for s in cycles:
        s.parts.append(s)  # a cycle: refcounting cannot free it
    del cycles, s
    gc.collect()
    assert all(p() is not None for p in probes), "frozen: no collection walks them before the thaw"
    # The memory held grows past twice what it was after the last walk: all is thawed, walked once, the cycles freed.
    grown = [Session() for _ in range(freezer.thaw_at // 4)]  # more than 4 blocks each
    for _ in range(3):
        gc.collect()
    assert freezer.thaws >= 1  # more than one when automatic collections walk while the list is half built
    assert all(p() is None for p in probes)
    # ... and the survivors of that walk are frozen again, with the next thaw twice as far.
    assert len(gc.get_objects(generation=2)) < 500
    assert freezer.thaw_at >= 2 * 4 * len(grown)  # in blocks
    del grown


def test_objects_that_come_and_go_do_not_thaw(freezer):
    """Frozen objects freed by refcounting give their memory back: sessions opening and closing again and again
    (each batch frozen by a full collection while it lived) never make the process walk everything."""
    bound = freezer.thaw_at
    for _ in range(6):
        batch = [Session() for _ in range(bound // 40)]  # several blocks each: a good part of the bound
        gc.collect()
        del batch
    assert freezer.thaws == 0 and freezer.thaw_at == bound


def test_the_growth_must_be_above_one():
    with pytest.raises(ValueError, match="above 1"):
        SurvivorFreezer(growth=1.0)


def test_off_leaves_cpythons_collector_alone():
    callbacks = list(gc.callbacks)
    assert install_gc_policy(False) is None
    assert gc.callbacks == callbacks and gc.get_freeze_count() == 0
