"""Native tests of the rule, on the dataclasses componentize-py generates from the WIT."""

from wit_world.imports.placement_types import Candidates, PlacementRequest

import spread

GIB = 1 << 30


def candidates(rows):
    """Columns from rows of (cores_total, cores_reserved, user_sessions[, memory_reserved])."""
    n = len(rows)
    return Candidates(
        cores_total=[r[0] for r in rows],
        cores_reserved=[r[1] for r in rows],
        memory_total=[16 * GIB] * n,
        memory_reserved=[r[3] if len(r) > 3 else 0 for r in rows],
        gpus_total=[0] * n,
        gpus_reserved=[0] * n,
        sessions=[0] * n,
        max_sessions=[10] * n,
        user_sessions=[r[2] for r in rows],
        cpu_load=[0.0] * n,
        memory_load=[0.0] * n,
    )


REQUEST = PlacementRequest(cores=1.0, memory=GIB, gpus=0, user_key=7, same_zone=True)


def test_the_users_own_sessions_count_before_load():
    c = candidates([(8.0, 0.0, 2), (8.0, 7.0, 0), (8.0, 1.0, 1)])
    assert spread.rank(REQUEST, c) == [1, 2, 0]


def test_among_equals_the_emptiest_then_the_lower_index_wins():
    c = candidates([(8.0, 4.0, 0), (8.0, 2.0, 0), (8.0, 2.0, 0)])
    assert spread.rank(REQUEST, c) == [1, 2, 0]


def test_memory_counts_when_it_is_the_fuller_resource():
    c = candidates([(8.0, 1.0, 0, 12 * GIB), (8.0, 2.0, 0, 0)])
    assert spread.rank(REQUEST, c) == [1, 0]


def test_an_overcommitted_candidate_still_ranks_by_user_sessions_first():
    c = candidates([(2.0, 8.0, 0), (8.0, 0.0, 1)])
    assert spread.rank(REQUEST, c) == [0, 1]


def test_no_candidates_no_ranking():
    assert spread.rank(REQUEST, candidates([])) == []
