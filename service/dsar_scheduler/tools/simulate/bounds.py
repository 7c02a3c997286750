"""The service's bounds counted in requests or calls, divided by the scale in a scaled run.

At 1/scale one simulated request stands for ``scale`` subjects and one call for ``scale``
calls (lasting ``scale`` times as long). A bound the service sets in requests or calls would
then reach ``scale`` times as far into the real traffic as at full scale, and the run would
not be the full run folded: so these are divided by the scale while it runs.

* The completion prior's weight (``policy.PRIOR_WEIGHT``, worth that many completions, in
  the completion model and the discovery delay): undivided, at 1/20 it weighed as much as
  400 real completions and pulled the planner's model towards the prior.
* ``limits.CHUNK`` and ``limits.SUBMIT_FLUSH``: calls reserved in one transaction, and
  answers recorded together (a cost counts in the rolling hour from when it is recorded):
  a chunk of scaled calls would hold its reservations ``scale`` times longer.
* ``limits.ADMIT_BATCH``: queue rows admitted per page (a tick reads at most
  ``MAX_ADMIT_BATCHES`` pages): the same share of a backlog is admitted per tick.
* The planner's most submissions per tick: ``run._batch_size`` divides every batch size.

Kept as they are: ``policy.MAX_SAMPLES`` (the planner thins completions and running requests
by the same ids beyond it, so the cap sets only how noisy the model is, not where it lies),
``limits.PAGE`` (a page of fetches ends by waiting for its last download,
one download's time: the same share of the page at any scale only at the same size), and
``policy.FILE_SAMPLES``, ``policy.SUBMIT_HEAD`` and the files prior (plain means over
requests drawn alike at any scale: dividing them would only add sampling noise).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from dsar_scheduler.core import completion, policy
from dsar_scheduler.tick import limits

#: (module, name) of each count divided by the scale.
SCALED_COUNTS: tuple[tuple[ModuleType, str], ...] = (
    (limits, "CHUNK"),
    (limits, "SUBMIT_FLUSH"),
    (limits, "ADMIT_BATCH"),
)
#: Their values at full scale, as the service sets them (read once, for reports).
FULL_SCALE = {(module, name): int(getattr(module, name)) for module, name in SCALED_COUNTS}


def at_scale(count: int, scale: float) -> int:
    """A count of requests or calls at 1/``scale``: at least 1."""
    return max(1, round(count / scale))


def scaled_bounds(scale: float) -> dict[str, tuple[float, float]]:
    """Each bound's name with its value at full scale and at 1/``scale`` (for reports)."""
    bounds: dict[str, tuple[float, float]] = {
        f"{module.__name__.rsplit('.', 1)[-1]}.{name}": (value, at_scale(value, scale))
        for (module, name), value in FULL_SCALE.items()
    }
    bounds["policy.PRIOR_WEIGHT"] = (completion.PRIOR_WEIGHT, completion.PRIOR_WEIGHT / scale)
    return bounds


@contextmanager
def bounds_at_scale(scale: float) -> Iterator[None]:
    """The bounds divided by ``scale`` inside the block, put back after it (the service
    reads each at its use, as ``limits.NAME`` or a module global, so the tick and the
    planner see the divided value)."""
    if scale == 1:
        yield
        return
    weight = completion.PRIOR_WEIGHT / scale
    changes: list[tuple[ModuleType, str, object]] = [
        (module, name, at_scale(getattr(module, name), scale)) for module, name in SCALED_COUNTS
    ]
    changes.append((policy, "PRIOR_WEIGHT", weight))
    saved = [(module, name, getattr(module, name)) for module, name, _ in changes]
    try:
        for module, name, value in changes:
            setattr(module, name, value)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
