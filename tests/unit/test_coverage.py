"""The coverage rule (``core.coverage``) as a table, and the verifier's count of the distinct
``amplitude_id``s a file holds."""

from __future__ import annotations

import gzip
import json

import pytest

from dsar_scheduler.adapters.verify import GzipJsonLinesVerifier
from dsar_scheduler.adapters.verify.lines import MAX_IDS
from dsar_scheduler.core.coverage import FileIds, coverage, decode_ids, encode_ids, section

WHY = "no resolved set"


@pytest.mark.parametrize(
    ("expected", "files", "missing", "checked", "why"),
    [
        # every resolved ID in the export: nothing to ask
        ({1, 2}, [FileIds(frozenset({1})), FileIds(frozenset({2}))], (), True, None),
        # the merged ID 3 missed: asked for, and only it
        ({1, 2, 3}, [FileIds(frozenset({1, 2}))], (3,), True, None),
        # IDs in the export beyond the resolved set are no reason to ask anything
        ({1}, [FileIds(frozenset({1, 9}))], (), True, None),
        # a user found in no project: nothing expected, nothing missing
        (set(), [FileIds(frozenset({5}))], (), True, None),
        # no files at all: every resolved ID is missing
        ({4, 5}, [], (4, 5), True, None),
        # no resolved set: not checked, why given
        (None, [FileIds(frozenset({1}))], (), False, WHY),
        # a file never counted: not checked, nothing asked
        ({1, 2}, [FileIds(frozenset({1})), None], (), False, "before"),
        # a file too varied to be one subject's: not compared
        ({1, 2}, [FileIds(frozenset({1}), capped=True)], (), False, "too many"),
    ],
)
def test_coverage(
    expected: set[int] | None,
    files: list[FileIds | None],
    missing: tuple[int, ...],
    checked: bool,
    why: str | None,
) -> None:
    result = coverage(None if expected is None else frozenset(expected), files, WHY)
    assert result.missing == missing
    assert result.checked is checked
    if why is None:
        assert result.why is None
    else:
        assert result.why is not None and why in result.why


def test_section_lists_the_sets_sorted_and_the_supplements() -> None:
    result = coverage(frozenset({3, 1, 2}), [FileIds(frozenset({2}))], WHY)
    assert section(result, [41, 42]) == {
        "checked": True,
        "why": None,
        "expected": [1, 2, 3],
        "found": [2],
        "missing": [1, 3],
        "supplements": [41, 42],
    }
    assert section(coverage(None, [], WHY))["expected"] is None


@pytest.mark.parametrize(
    ("ids", "capped", "text"),
    [(set(), False, ""), ({3, 1}, False, "1,3"), ({7}, True, "7,+")],
)
def test_ids_round_trip(ids: set[int], capped: bool, text: str) -> None:
    assert encode_ids(ids, capped) == text
    assert decode_ids(text) == FileIds(frozenset(ids), capped)
    assert decode_ids(None) is None


def verified(lines: list[object]) -> tuple[frozenset[int], bool, int]:
    body = gzip.compress("".join(json.dumps(line) + "\n" for line in lines).encode())
    verifier = GzipJsonLinesVerifier()
    verifier.update(body)
    result = verifier.finish()
    return result.amplitude_ids, result.ids_capped, result.event_count


def test_the_verifier_collects_each_files_distinct_integer_amplitude_ids() -> None:
    lines: list[object] = [
        {"amplitude_id": 5, "event_type": "a"},
        {"amplitude_id": 5},
        {"amplitude_id": 7, "data": {"merged_amplitude_id": 9}},
        {"amplitude_id": "8"},  # not an integer: not counted
        {"amplitude_id": True},
        {"event_type": "no id"},
    ]
    assert verified(lines) == (frozenset({5, 7}), False, 6)


def test_the_verifier_stops_collecting_past_the_cap_and_says_so() -> None:
    ids, capped, events = verified([{"amplitude_id": a} for a in range(MAX_IDS + 5)])
    assert len(ids) == MAX_IDS and capped and events == MAX_IDS + 5
    ids, capped, _ = verified([{"amplitude_id": a} for a in range(MAX_IDS)])
    assert len(ids) == MAX_IDS and not capped


def test_a_last_line_without_its_newline_is_counted_too() -> None:
    body = gzip.compress(b'{"amplitude_id": 3}\n{"amplitude_id": 11}')
    verifier = GzipJsonLinesVerifier()
    verifier.update(body)
    assert verifier.finish().amplitude_ids == frozenset({3, 11})
