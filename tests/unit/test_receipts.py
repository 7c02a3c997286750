"""A deletion receipt goes into an evidence bundle cut to its own subject: by table, what of an
answer is kept and what (someone else's entry) is left out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dsar_scheduler.core.receipts import deletion_document, excerpt, subject_ids

IDS = {"80000031", "90000031"}
ME = "user-80000031"


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        # a POST answer for a batch of two requests: only ours
        (
            {
                "day": "2026-12-17",
                "status": "staging",
                "amplitude_ids": [
                    {"amplitude_id": 80000031, "requested_on_day": "2026-12-05", "requester": "r"},
                    {"amplitude_id": 80000044, "requested_on_day": "2026-12-05", "requester": "r"},
                ],
                "invalid_ids": [90000031, 77777777],
            },
            {
                "day": "2026-12-17",
                "status": "staging",
                "amplitude_ids": [
                    {"amplitude_id": 80000031, "requested_on_day": "2026-12-05", "requester": "r"}
                ],
                "invalid_ids": [90000031],
            },
        ),
        # a listing: jobs kept, other subjects' entries left out
        (
            [{"day": "2026-12-17", "status": "done", "amplitude_ids": [{"amplitude_id": 5555555}]}],
            [{"day": "2026-12-17", "status": "done", "amplitude_ids": []}],
        ),
        # a search by prefix: the subject and a candidate who is someone else
        (
            {
                "type": "match_user_prefix",
                "matches": [
                    {"user_id": ME, "amplitude_id": 80000031},
                    {"user_id": "user-800000311", "amplitude_id": 800000311},
                ],
            },
            {"type": "match_user_prefix", "matches": [{"user_id": ME, "amplitude_id": 80000031}]},
        ),
        # the subject found under its user ID with a new (re-ingested) Amplitude ID
        (
            {"matches": [{"user_id": ME, "amplitude_id": 123456789}], "type": "x"},
            {"matches": [{"user_id": ME, "amplitude_id": 123456789}], "type": "x"},
        ),
        # user activity: its merged IDs are the subject's own
        (
            {"userData": {"canonical_amplitude_id": 80000031, "merged_amplitude_ids": [90000031]}},
            {"userData": {"canonical_amplitude_id": 80000031, "merged_amplitude_ids": [90000031]}},
        ),
        ({"type": "nomatch", "matches": []}, {"type": "nomatch", "matches": []}),
    ],
)
def test_an_answer_is_cut_to_its_subject(answer: Any, kept: Any) -> None:
    assert excerpt(json.dumps(answer), IDS, ME) == kept


def test_what_is_not_json_is_left_out_whole() -> None:
    assert "left out" in excerpt("<html>user-99@example.com</html>", IDS, ME)["note"]


def test_the_document_lists_entries_and_receipts_without_bodies() -> None:
    entries = [{"amplitude_id": 80000031, "reingested": "123456789"}]
    assert subject_ids(entries, None) == {"80000031", "123456789"}
    body = json.dumps({"amplitude_ids": [{"amplitude_id": 44444444}]})
    receipt = {"kind": "post", "project_id": 7, "at": "t", "status_code": 200}
    document = deletion_document(
        {"id": 1, "request_type": "deletion", "amplitude_id": None, "user_id": ME},
        entries,
        [{**receipt, "sha256": "ab", "body": body}],
    )
    (kept,) = document["receipts"]
    assert kept == {**receipt, "sha256": "ab", "excerpt": {"amplitude_ids": []}}
    assert "44444444" not in json.dumps(document)
