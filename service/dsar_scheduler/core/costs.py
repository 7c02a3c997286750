"""What each Amplitude call costs against the org's shared budget (the DSAR API docs: a POST
costs 8, a GET 1). One table: the budget, the planner and the baseline all read it here.

The emulator keeps its own copy on purpose: it plays Amplitude, whose prices the service
must not be able to change by editing this table."""

from __future__ import annotations

from typing import Final, Literal

#: The kinds of call the service makes against the budget.
CallKind = Literal["submit", "status", "fetch"]

SUBMIT_COST: Final = 8
STATUS_COST: Final = 1
FETCH_COST: Final = 1

COST: Final[dict[str, int]] = {"submit": SUBMIT_COST, "status": STATUS_COST, "fetch": FETCH_COST}
