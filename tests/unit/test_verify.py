"""The streaming verifier: a file is accepted only if it is complete, intact gzip JSON lines."""

from __future__ import annotations

import gc
import gzip
import hashlib
import itertools
import json
import random
import threading
import tracemalloc
import zlib
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsar_scheduler.adapters.verify import GzipJsonLinesVerifier, VerificationError, VerifiedFile
from dsar_scheduler.adapters.verify import verifier as verify_module

MIB = 2**20


@pytest.fixture(autouse=True, params=["inline", "worker"])
def inflate_on(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: small files inflate inline, big ones on the worker thread; both
    must accept and reject the same streams with the same messages."""
    if request.param == "worker":
        monkeypatch.setattr(verify_module, "_THREAD_AFTER", 0)
    return str(request.param)


def events(n: int, start: int = 0) -> bytes:
    return b"".join(
        json.dumps({"event_id": i, "event_type": "page view", "user_id": "u-1"}).encode() + b"\n"
        for i in range(start, start + n)
    )


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def verify(
    chunks: Iterable[bytes], expected_length: int | None = None, max_line_bytes: int = 64 * MIB
) -> VerifiedFile:
    verifier = GzipJsonLinesVerifier(expected_length, max_line_bytes)
    for chunk in chunks:
        verifier.update(chunk)
    return verifier.finish()


def expected(data: bytes, count: int) -> VerifiedFile:
    return VerifiedFile(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), event_count=count)


SINGLE = gz(events(50))
MULTI = gz(events(20)) + gz(b"") + gz(events(7, start=20)) + gz(events(3, start=27))
MULTI_BOUNDARIES = {
    len(gz(events(20))),
    len(gz(events(20)) + gz(b"")),
    len(gz(events(20)) + gz(b"") + gz(events(7, start=20))),
}


# -- valid files --------------------------------------------------------------------------


def test_single_member() -> None:
    assert verify([SINGLE]) == expected(SINGLE, 50)


def test_multi_member_counts_every_member() -> None:
    assert verify([MULTI]) == expected(MULTI, 30)


def test_content_length_that_matches_is_accepted() -> None:
    assert verify([SINGLE], expected_length=len(SINGLE)) == expected(SINGLE, 50)


@pytest.mark.parametrize("data", [SINGLE, MULTI], ids=["single", "multi"])
def test_every_split_point_and_byte_by_byte_give_the_same_result(data: bytes) -> None:
    whole = verify([data])
    for i in range(len(data) + 1):
        assert verify([data[:i], data[i:]]) == whole
    assert verify(data[i : i + 1] for i in range(len(data))) == whole


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(MULTI)), max_size=40))
def test_random_chunking_gives_the_same_result(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(MULTI)]
    chunks = [MULTI[a:b] for a, b in itertools.pairwise(points)]
    assert verify(chunks) == expected(MULTI, 30)


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(
        st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=20), max_size=4),
        max_size=30,
    ),
    members=st.integers(min_value=1, max_value=4),
    chunk=st.integers(min_value=1, max_value=97),
)
def test_any_json_lines_in_any_members_and_chunks(
    lines: list[dict[str, object]], members: int, chunk: int
) -> None:
    encoded = [json.dumps(line).encode() + b"\n" for line in lines]
    per = max(1, len(encoded) // members)
    groups = [encoded[i : i + per] for i in range(0, len(encoded), per)] or [[]]
    data = b"".join(gz(b"".join(group)) for group in groups)
    result = verify(data[i : i + chunk] for i in range(0, len(data), chunk))
    assert result == expected(data, len(lines))


def test_zero_event_file_is_valid() -> None:
    empty = gz(b"")
    assert verify([empty]) == expected(empty, 0)


def test_blank_lines_are_not_events_and_crlf_is_fine() -> None:
    data = gz(b"\n" + b'{"a": 1}\r\n' + b"\n  \n" + b'{"b": 2}\n\n')
    assert verify([data]).event_count == 2
    assert verify([gz(b"\n\n\n")]).event_count == 0


def test_last_line_without_newline_is_counted() -> None:
    assert verify([gz(b'{"a": 1}\n{"b": 2}')]).event_count == 2


def test_empty_chunks_are_harmless() -> None:
    assert verify([b"", SINGLE[:10], b"", SINGLE[10:], b""]) == expected(SINGLE, 50)


def test_finish_twice_returns_the_same_result_and_update_after_finish_is_refused() -> None:
    verifier = GzipJsonLinesVerifier()
    verifier.update(SINGLE)
    assert verifier.finish() == verifier.finish() == expected(SINGLE, 50)
    with pytest.raises(RuntimeError):
        verifier.update(b"more")


# -- not gzip, truncated, corrupt ---------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b'{"a": 1}\n', b"<html>Access Denied</html>", b"\x1f", b"\x1fX", events(3)],
    ids=["empty", "plain-json", "html", "half-magic", "bad-second-byte", "uncompressed"],
)
def test_not_gzip(data: bytes) -> None:
    with pytest.raises(VerificationError, match=r"not a gzip file|truncated"):
        verify([data])


def test_plain_json_is_reported_as_not_gzip_already_by_update(inflate_on: str) -> None:
    verifier = GzipJsonLinesVerifier()
    with pytest.raises(VerificationError, match=r"not a gzip file"):
        verifier.update(b'{"a": 1}\n')
        assert inflate_on == "worker"  # inline, update itself raised
        verifier.update(b"more")  # on the worker, a chunk is checked by the next call


def test_truncated_single_member_at_every_offset_is_an_error() -> None:
    for cut in range(len(SINGLE)):
        with pytest.raises(VerificationError, match=r"truncated|not a gzip file"):
            verify([SINGLE[:cut]])


def test_truncated_multi_member_at_every_offset_is_an_error() -> None:
    # Cutting exactly between members leaves a valid shorter gzip file: only Content-Length
    # can tell. With it, every cut is caught; without it, every cut inside a member is.
    for cut in range(len(MULTI)):
        with pytest.raises(VerificationError):
            verify([MULTI[:cut]], expected_length=len(MULTI))
        if cut not in MULTI_BOUNDARIES:
            with pytest.raises(VerificationError, match=r"truncated|not a gzip file"):
                verify([MULTI[:cut]])


def test_corrupted_crc() -> None:
    bad = bytearray(SINGLE)
    bad[-8] ^= 0x01
    with pytest.raises(VerificationError, match=r"gzip CRC check failed"):
        verify([bytes(bad)])


def test_corrupted_isize() -> None:
    bad = bytearray(SINGLE)
    bad[-3] ^= 0x01
    with pytest.raises(VerificationError, match=r"gzip length check failed"):
        verify([bytes(bad)])


def test_corrupted_deflate_data_never_passes() -> None:
    for offset in range(10, len(SINGLE) - 8):
        bad = bytearray(SINGLE)
        bad[offset] ^= 0xFF
        with pytest.raises(VerificationError):
            verify([bytes(bad)])


def test_bad_compression_method() -> None:
    bad = bytearray(SINGLE)
    bad[2] = 7
    with pytest.raises(VerificationError, match=r"gzip stream corrupt: unknown compression method"):
        verify([bytes(bad)])


@pytest.mark.parametrize("tail", [b"garbage", b"\x00\x00\x00\x00", b"\n", b"\x1f\x8b\x08"])
def test_trailing_data_after_the_last_member_is_an_error(tail: bytes) -> None:
    with pytest.raises(VerificationError, match=r"trailing garbage|truncated|corrupt"):
        verify([SINGLE + tail])
    with pytest.raises(VerificationError, match=r"trailing garbage|truncated|corrupt"):
        verify([SINGLE, tail])


def test_trailing_garbage_message_names_the_offset() -> None:
    with pytest.raises(VerificationError, match=rf"trailing garbage .* at byte {len(SINGLE)}$"):
        verify([SINGLE + b"garbage"])


# -- lines --------------------------------------------------------------------------------


def test_invalid_json_line_is_named_by_number() -> None:
    data = events(11) + b'{"event_id": 11, oops}\n' + events(3)
    with pytest.raises(VerificationError, match=r"^line 12 is not valid JSON$"):
        verify([gz(data)])


@pytest.mark.parametrize("value", [b"[1, 2]", b"42", b'"text"', b"null", b"true"])
def test_a_line_that_is_not_an_object(value: bytes) -> None:
    data = b'{"a": 1}\n{"b": 2}\n' + value + b"\n"
    with pytest.raises(VerificationError, match=r"^line 3 is not a JSON object$"):
        verify([gz(data)])


def test_line_numbers_count_blank_lines() -> None:
    with pytest.raises(VerificationError, match=r"^line 4 is not valid JSON$"):
        verify([gz(b'{"a": 1}\n\n\n{x\n')])


def test_invalid_utf8() -> None:
    with pytest.raises(VerificationError, match=r"^line 1 is not valid UTF-8$"):
        verify([gz(b'{"a": "\xff"}\n')])


def test_deeply_nested_line_is_an_error_not_a_crash() -> None:
    with pytest.raises(VerificationError, match=r"^line 1 is nested too deeply to parse$"):
        verify([gz(b'{"a": ' * 200_000 + b"1" + b"}" * 200_000 + b"\n")])


def test_bad_line_is_reported_by_update_not_only_at_finish() -> None:
    data = gz(b"not json\n" + events(10_000))
    verifier = GzipJsonLinesVerifier()
    with pytest.raises(VerificationError, match=r"line 1 is not valid JSON"):
        for i in range(0, len(data), 1024):
            verifier.update(data[i : i + 1024])
    with pytest.raises(VerificationError, match=r"line 1 is not valid JSON"):
        verifier.finish()  # a failed verifier stays failed


def test_line_longer_than_the_limit() -> None:
    line = b'{"pad": "' + b"a" * 100 + b'"}'
    assert verify([gz(line + b"\n")], max_line_bytes=len(line)).event_count == 1
    assert verify([gz(line)], max_line_bytes=len(line)).event_count == 1
    with pytest.raises(VerificationError, match=r"^line 2 longer than 110 bytes$"):
        verify([gz(b"{}\n" + line + b"\n")], max_line_bytes=len(line) - 1)
    with pytest.raises(VerificationError, match=r"^line 1 longer than 110 bytes$"):
        verify([gz(line)], max_line_bytes=len(line) - 1)


def test_default_line_limit_is_reported_in_mib() -> None:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    data = b"".join(compressor.compress(b" " * MIB) for _ in range(17)) + compressor.flush()
    verifier = GzipJsonLinesVerifier()
    with pytest.raises(VerificationError, match=r"^line 1 longer than 16 MiB$"):
        verifier.update(data)
        verifier.finish()


# -- Content-Length -----------------------------------------------------------------------


def test_fewer_bytes_than_content_length() -> None:
    with pytest.raises(VerificationError, match=rf"^got 100 bytes, Content-Length said {2000}$"):
        verify([SINGLE[:100]], expected_length=2000)


def test_complete_file_but_content_length_larger() -> None:
    with pytest.raises(
        VerificationError, match=rf"^got {len(SINGLE)} bytes, Content-Length said 99999$"
    ):
        verify([SINGLE], expected_length=99_999)


def test_more_bytes_than_content_length_fails_in_update() -> None:
    verifier = GzipJsonLinesVerifier(expected_length=10)
    with pytest.raises(VerificationError, match=r"got more than 10 bytes .*Content-Length said 10"):
        verifier.update(SINGLE)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        GzipJsonLinesVerifier(expected_length=-1)
    with pytest.raises(ValueError):
        GzipJsonLinesVerifier(max_line_bytes=0)


# -- memory -------------------------------------------------------------------------------


def _compressible(total_mib: int) -> tuple[bytes, int]:
    """A gzip of ``total_mib`` MiB of 8 KiB JSON lines that compresses about 200:1."""
    line = b'{"event_type": "x", "pad": "' + b"a" * (8192 - 31) + b'"}\n'
    block = line * (MIB // len(line))
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    data = b"".join(compressor.compress(block) for _ in range(total_mib)) + compressor.flush()
    return data, total_mib * (MIB // len(line))


def test_large_compressible_stream_is_verified_in_bounded_memory() -> None:
    data, lines = _compressible(200)
    assert len(data) < 2 * MIB
    tracemalloc.start()
    try:
        verifier = GzipJsonLinesVerifier()
        step = 1 * MIB  # big chunks: each expands to ~200 MiB if decompressed in one go
        for i in range(0, len(data), step):
            verifier.update(data[i : i + step])
        result = verifier.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.event_count == lines
    assert peak < 16 * MIB, f"peak {peak / MIB:.1f} MiB for 200 MiB decompressed"


def test_gzip_bomb_line_fails_early_in_bounded_memory() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = b"".join(compressor.compress(b"\0" * MIB) for _ in range(100)) + compressor.flush()
    tracemalloc.start()
    try:
        verifier = GzipJsonLinesVerifier(max_line_bytes=MIB)
        with pytest.raises(VerificationError, match=r"^line 1 longer than 1 MiB$"):
            verifier.update(data)
            verifier.finish()  # on the worker, the one chunk is checked here
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB


# -- lines: the fast path judges exactly as one line at a time ----------------------------


def model(text: bytes) -> int | str:
    """What the verifier must say about ``text``, one line at a time: the event count, or
    the message of the first bad line."""
    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    events = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            return f"line {number} is not valid UTF-8"
        except ValueError:
            return f"line {number} is not valid JSON"
        except RecursionError:
            return f"line {number} is nested too deeply to parse"
        if not isinstance(value, dict):
            return f"line {number} is not a JSON object"
        events += 1
    return events


def outcome(chunks: Iterable[bytes], max_line_bytes: int = 64 * MIB) -> int | str:
    try:
        return verify(chunks, max_line_bytes=max_line_bytes).event_count
    except VerificationError as exc:
        return str(exc)


FRAGMENTS = [
    b'{"a": 1}',
    b'{"b": [1, {"c": "d"}], "e": null}',
    b'  {"lead": "space"}',
    b'{"trail": 1}  \t',
    b'{"crlf": 1}\r',
    b"\r",
    b"   ",
    b"\x0b\x0c ",  # blank for bytes.strip(), not JSON whitespace
    b'\x0b{"a": 1}',
    b'{"a": 1}\x0c',
    b'{"a": 1} {"b": 2}',
    b'{"a": 1}x',
    b'{"split":',  # an object the next line would close
    b"1}",
    b"[1, 2]",
    b"42",
    b'"text"',
    b"NaN",
    b'{"n": NaN, "i": -Infinity}',  # the json module accepts these
    b"\xef\xbb\xbf{}",  # a BOM
    b'{"u": "\xc3\xa9\xe2\x82\xac"}',
    b'{"bad": "\xff"}',
    b'{"sur": "\xed\xa0\x80"}',  # an encoded surrogate: not UTF-8
    b'{"esc": "\\ud800"}',  # an escaped lone surrogate: valid JSON
    b'{"ctl": "a\tb"}',  # a raw tab in a string: invalid JSON
    b'{"deep": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b"",
]


GOOD_LINES = [b'{"event_id": 1}', b'{"e": "\xc3\xa9", "p": {"q": [1.5, true]}}', b"{}"]


@settings(max_examples=300, deadline=None)
@given(
    picks=st.lists(st.sampled_from(FRAGMENTS) | st.sampled_from(GOOD_LINES), max_size=12),
    newline_at_end=st.booleans(),
    chunk=st.integers(min_value=1, max_value=200),
)
def test_any_mix_of_lines_is_judged_as_one_line_at_a_time(
    picks: list[bytes], newline_at_end: bool, chunk: int
) -> None:
    text = b"\n".join(picks) + (b"\n" if newline_at_end else b"")
    data = gz(text)
    expected_outcome = model(text)
    assert outcome([data]) == expected_outcome
    assert outcome(data[i : i + chunk] for i in range(0, len(data), chunk)) == expected_outcome


def test_the_first_bad_line_wins_whatever_is_wrong_with_later_ones() -> None:
    good = events(1000)
    cases = {
        b'{"a": 1}\nnot json\n{"bad": "\xff"}\n': "line 2 is not valid JSON",
        b'{"bad": "\xff"}\nnot json\n': "line 1 is not valid UTF-8",
        good + b"[1]\n" + b'{"bad": "\xff"}\n': "line 1001 is not a JSON object",
        good + b'{"bad": "\xff"}\n' + b"[1]\n": "line 1001 is not valid UTF-8",
    }
    for text, message in cases.items():
        assert model(text) == message
        assert outcome([gz(text)]) == message


def test_a_long_line_in_the_middle_of_a_slice_is_named_after_the_bad_lines_before_it() -> None:
    long_line = b'{"pad": "' + b"a" * 500 + b'"}\n'
    assert outcome([gz(events(10) + long_line)], max_line_bytes=400) == (
        "line 11 longer than 400 bytes"
    )
    assert outcome([gz(b"nope\n" + long_line)], max_line_bytes=400) == ("line 1 is not valid JSON")


def test_a_huge_line_without_a_newline_fails_in_bounded_memory() -> None:
    """The default limit stops a line that never ends (16 MiB) and holds no more than it."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    data = compressor.compress(b'{"pad": "') + b"".join(
        compressor.compress(b"a" * MIB) for _ in range(40)
    )
    tracemalloc.start()
    try:
        verifier = GzipJsonLinesVerifier()
        with pytest.raises(VerificationError, match=r"^line 1 longer than 16 MiB$"):
            for i in range(0, len(data), MIB):
                verifier.update(data[i : i + MIB])
            verifier.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * MIB, f"peak {peak / MIB:.1f} MiB"


def test_a_line_at_the_limit_is_checked_in_a_few_times_its_size() -> None:
    line = b'{"pad": "' + b"a" * (4 * MIB) + b'"}\n'
    data = gz(line + events(3))
    tracemalloc.start()
    try:
        result = verify([data[i : i + 65536] for i in range(0, len(data), 65536)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.event_count == 4
    assert peak < 3 * 4 * MIB, f"peak {peak / MIB:.1f} MiB for a 4 MiB line"


# -- the inflate worker -------------------------------------------------------------------


def inflate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dsar-inflate")]


def gone(threads: list[threading.Thread]) -> bool:
    for thread in threads:
        thread.join(timeout=30)
    return not any(thread.is_alive() for thread in threads)


def noisy_events(n: int) -> bytes:
    """Lines that compress only about 2:1 (random hex), so that a few MiB stay a few MiB."""
    rng = random.Random(5)
    return b"".join(
        json.dumps({"event_id": i, "pad": rng.randbytes(300).hex()}).encode() + b"\n"
        for i in range(n)
    )


BIG = gz(noisy_events(6000))  # over a MiB: the default settings inflate it on the worker


def test_a_big_file_is_inflated_on_the_worker_with_the_same_result(inflate_on: str) -> None:
    assert len(BIG) > verify_module._THREAD_AFTER + 256 * 1024
    before = set(inflate_threads())
    verifier = GzipJsonLinesVerifier(expected_length=len(BIG))
    seen: set[threading.Thread] = set()
    for i in range(0, len(BIG), 256 * 1024):
        verifier.update(BIG[i : i + 256 * 1024])
        seen.update(inflate_threads())
    assert verifier.finish() == expected(BIG, 6000)
    new = list(seen - before)
    assert new, "no inflate worker ran"
    assert gone(new)  # finish stops it


@pytest.mark.parametrize("how", ["error", "close", "dropped"])
def test_the_worker_stops_when_the_stream_is_given_up(how: str) -> None:
    bad = BIG[: len(BIG) // 2] + b"\x00" * 100_000 + BIG[len(BIG) // 2 :]
    before = set(inflate_threads())
    verifier: GzipJsonLinesVerifier | None = GzipJsonLinesVerifier()
    assert verifier is not None
    if how == "error":
        with pytest.raises(VerificationError):
            for i in range(0, len(bad), 65536):
                verifier.update(bad[i : i + 65536])
            verifier.finish()
    else:  # half the file, then nothing more
        for i in range(0, len(BIG) // 2, 65536):
            verifier.update(BIG[i : i + 65536])
    started = list(set(inflate_threads()) - before)
    assert started
    if how == "close":
        verifier.close()
        with pytest.raises(RuntimeError):
            verifier.update(b"more")
    elif how == "dropped":
        verifier = None
        gc.collect()
    assert gone(started)


def test_close_after_finish_keeps_the_result() -> None:
    verifier = GzipJsonLinesVerifier()
    verifier.update(BIG)
    result = verifier.finish()
    verifier.close()
    assert verifier.finish() == result == expected(BIG, 6000)
