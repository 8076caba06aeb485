"""Hypothesis settings shared by the hardening tests: the same examples on every run."""

from hypothesis import HealthCheck, settings

FIXED_EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # CI fails or passes for a reason, not for the examples it drew
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
