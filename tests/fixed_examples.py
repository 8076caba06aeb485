"""Shared by the hardening tests: the same hypothesis examples on every run, one hang guard."""

from hypothesis import HealthCheck, settings

FIXED_EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # CI fails or passes for a reason, not for the examples it drew
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

HANG_GUARD_S = 10
"""Seconds a refusal may take on a loaded machine: it guards against hangs and blow-ups (a
package bomb ran past 45 s; refusals take 0.06-0.5 s alone), not for speed: timings belong in
benchmarks/, and the tight bounds are on memory and on work not done."""
