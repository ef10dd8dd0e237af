"""A zonebroker load-balancing strategy.

`rank` orders the candidates for one session, best first; leave a candidate out to refuse it.
Candidates come as columns (`candidates.sessions[i]` is candidate i's session count) sorted by
id: ties broken by index are reproducible. Pure, so pytest runs it natively.
"""


def free_slots(candidates, i):
    return max(candidates.max_sessions[i] - candidates.sessions[i], 0)


def rank(request, candidates):
    """The candidate with the most free session slots first."""
    return sorted(
        range(len(candidates.sessions)),
        key=lambda i: (-free_slots(candidates, i), i),
    )
