"""The rule of `spread-users` (the same as the Rust example in examples/spread-users), as
plain Python: place a user's next session on the candidate running the fewest of that
user's sessions, so that one agent failing takes down as few of a user's sessions as
possible. Among equals, prefer the least loaded; among those, the lower index (candidates
arrive sorted by id).

Pure: it reads the candidate columns and returns indices, so pytest runs it natively.
"""


def fraction(reserved, total):
    """Reserved over total; a candidate of unknown size (pool servers) counts as empty, or
    as full once anything is reserved on it."""
    if total > 0:
        return reserved / total
    return 1.0 if reserved > 0 else 0.0


def load(candidates, i):
    """The larger of the reserved cores and memory fractions (Kasm's measure of load)."""
    return max(
        fraction(candidates.cores_reserved[i], candidates.cores_total[i]),
        fraction(candidates.memory_reserved[i], candidates.memory_total[i]),
    )


def rank(request, candidates):
    """Indices of `candidates`, best first."""

    def key(i):
        # One number orders by (the user's sessions, load), as the Rust example does: a load
        # is below 2 unless an override shrank an agent below what it already runs, so cap
        # it just under 2.
        return (candidates.user_sessions[i] * 2.0 + min(load(candidates, i), 1.999), i)

    return sorted(range(len(candidates.sessions)), key=key)
