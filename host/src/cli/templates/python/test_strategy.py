"""Native tests of the rule, on the dataclasses componentize-py generates from the WIT."""

from wit_world.imports.placement_types import Candidates, PlacementRequest

import strategy

REQUEST = PlacementRequest(cores=1.0, memory=1 << 30, gpus=0, user_key=7, same_zone=True)


def candidates(rows):
    """Columns from rows of (sessions, max_sessions)."""
    n = len(rows)
    return Candidates(
        cores_total=[8.0] * n,
        cores_reserved=[0.0] * n,
        memory_total=[16 << 30] * n,
        memory_reserved=[0] * n,
        gpus_total=[0] * n,
        gpus_reserved=[0] * n,
        sessions=[r[0] for r in rows],
        max_sessions=[r[1] for r in rows],
        user_sessions=[0] * n,
        cpu_load=[0.0] * n,
        memory_load=[0.0] * n,
    )


def test_most_free_slots_first():
    assert strategy.rank(REQUEST, candidates([(3, 4), (1, 4)])) == [1, 0]


def test_no_candidates_no_ranking():
    assert strategy.rank(REQUEST, candidates([])) == []
