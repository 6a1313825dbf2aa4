"""What the fuzz tests share: the example budget and damaged copies of a file's bytes."""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES = settings(max_examples=1000, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def damaged(original: bytes, skip: range = range(0)):
    """``original`` with some bytes flipped, cut, or inserted (never inside ``skip``)."""
    positions = st.integers(0, max(len(original) - 1, 0)).filter(lambda i: i not in skip)
    flipped = st.tuples(positions, st.integers(1, 255)).map(
        lambda p: original[:p[0]] + bytes([original[p[0]] ^ p[1]]) + original[p[0] + 1:])
    cut = st.integers(0, len(original) - 1).map(lambda n: original[:n])
    inserted = st.tuples(positions, st.binary(min_size=1, max_size=8)).map(
        lambda p: original[:p[0]] + p[1] + original[p[0]:])
    return st.one_of(flipped, cut, inserted)
