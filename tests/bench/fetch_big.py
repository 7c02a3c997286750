"""Benchmark: one very large output file, fetched over real loopback HTTP from the emulator
(in its own process), by curl and by the service's own path (``AmplitudeClient`` resolving
the output URL with credentials, then streaming the pre-signed download through
``GzipJsonLinesVerifier`` into ``LocalStorage``) in a fresh process whose peak memory is read
from the kernel (``VmHWM``, the high-water mark of this process's own memory map).

    .venv/bin/python -m tests.bench.fetch_big 1024

The file is concatenated gzip members of JSON-lines events, each carrying a few KiB of random
base64 (so it does not compress away and is quick to build); the verifier still decompresses
and parses every line.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

MEMBER_LINES = 4096
PAYLOAD_BYTES = 3072


def _member(seed: int) -> bytes:
    rng = random.Random(seed)
    lines = []
    for n in range(MEMBER_LINES):
        event = {
            "amplitude_id": 123456789,
            "app": 187520,
            "event_id": n,
            "event_type": "page_viewed",
            "event_time": "2025-06-01 12:00:00.000000",
            "user_properties": {"plan": "pro"},
            "event_properties": {
                "payload": base64.b64encode(rng.randbytes(PAYLOAD_BYTES)).decode()
            },
        }
        lines.append(json.dumps(event, separators=(",", ":")))
    return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=1, mtime=0)


def build_file(size_mib: int) -> bytes:
    members = [_member(k) for k in range(4)]
    out, total, k = [], 0, 0
    while total < size_mib * 2**20:
        out.append(members[k % len(members)])
        total += len(out[-1])
        k += 1
    return b"".join(out)


def serve(size_mib: int) -> None:
    """The emulator on loopback with one request whose single output is the big file."""
    from dsar_scheduler.adapters.clock import SystemClock
    from dsar_scheduler.tools.emulator import Emulator, EmulatorConfig

    config = EmulatorConfig(
        seed=1,
        projects_per_subject=1,
        completion_min_s=0,
        completion_max_s=0,
        cache_files=True,
        presign_ttl_s=3600,
        budget_per_hour=1_000_000,
    )
    with Emulator(config, SystemClock()) as emulator:
        auth = (config.api_key, config.secret_key)
        created = httpx.post(
            emulator.api_base_url,
            json={"amplitudeId": 42, "startDate": "2025-06-01", "endDate": "2025-06-30"},
            auth=auth,
        )
        remote = created.json()["requestId"]
        emulator.complete(remote)
        data = build_file(size_mib)
        emulator.replace_file(remote, 0, data)
        (expected,) = emulator.expected_files(remote)
        del data
        sys.stdout.write(
            json.dumps(
                {
                    "api_base_url": emulator.api_base_url,
                    "url": expected.url,
                    "key": config.api_key,
                    "secret": config.secret_key,
                    "size": expected.size,
                    "sha256": expected.sha256,
                }
            )
            + "\n"
        )
        sys.stdout.flush()
        sys.stdin.read()  # until the parent closes it


def peak_rss_kib() -> int:
    """This process's peak resident memory, in KiB.

    ``VmHWM`` belongs to the process's own memory map, which ``exec`` made new. Not
    ``ru_maxrss``: on Linux that survives ``exec`` and starts at the RSS of the process that
    spawned this one (``subprocess`` uses ``vfork``), so a child of a big parent reports the
    parent's peak (a child of the capacity benchmark, after its simulations, showed 242 MiB).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: an upper bound


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fetch(spec: dict[str, Any], mode: str) -> None:
    """In a fresh process: the service's fetch path (``mode`` full), or the download alone
    (``raw``); prints seconds (to the file stored and fsync-ed, not counting the removal of
    the temporary folder afterwards), bytes, sha256, the peak RSS and the RSS before the
    download (the interpreter and the service's imports)."""
    import dsar_scheduler.runtime.app
    import dsar_scheduler.runtime.daemon
    from dsar_scheduler.adapters.amplitude import AmplitudeClient
    from dsar_scheduler.adapters.storage.local import LocalStorage
    from dsar_scheduler.adapters.verify import GzipJsonLinesVerifier

    assert dsar_scheduler.runtime.app.build_app is not None

    client = AmplitudeClient(
        spec["api_base_url"], spec["key"], spec["secret"], allow_http=True, download_timeout=600
    )
    before_kib = peak_rss_kib()
    with tempfile.TemporaryDirectory(dir=spec.get("dir")) as tmp:
        storage = LocalStorage(Path(tmp))
        began, cpu_began, main_began = time.perf_counter(), _cpu_seconds(), time.thread_time()
        location = client.resolve_output(spec["url"])
        with client.download(location) as download:
            if mode == "raw":
                size = sum(len(c) for c in download.chunks())
                sha = ""
            else:
                verifier = GzipJsonLinesVerifier(expected_length=download.content_length)
                stored = storage.put_verified(
                    "req-00000001/big.json.gz", download.chunks(), verifier
                )
                size, sha = stored.bytes, stored.sha256
        seconds = time.perf_counter() - began
        cpu, main_cpu = _cpu_seconds() - cpu_began, time.thread_time() - main_began
    client.close()
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu,  # every thread of the process, user and system
        "main_thread_cpu_seconds": main_cpu,
        "bytes": size,
        "sha256": sha,
        "peak_rss_kib": peak_rss_kib(),
        "start_rss_kib": before_kib,
    }
    sys.stdout.write(json.dumps(result) + "\n")


def _child(spec: dict[str, Any], mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.fetch_big", "fetch", mode],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _curl(spec: dict[str, Any]) -> float:
    """Seconds for curl to download the pre-signed URL to /dev/null."""
    answer = httpx.get(spec["url"], auth=(spec["key"], spec["secret"]), follow_redirects=False)
    location = answer.headers["location"]
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", location],
        capture_output=True,
        text=True,
        check=True,
    )
    size, seconds = out.stdout.split()
    assert int(size) == spec["size"], (size, spec["size"])
    return float(seconds)


def _curl_gunzip(spec: dict[str, Any]) -> float:
    """Seconds for ``curl | gzip -dc > /dev/null``: the download with C tools that at least
    decompress it (every byte inflated, the CRC checked; no line parsed)."""
    answer = httpx.get(spec["url"], auth=(spec["key"], spec["secret"]), follow_redirects=False)
    began = time.perf_counter()
    subprocess.run(
        f"curl -sS '{answer.headers['location']}' | gzip -dc > /dev/null",
        shell=True,
        check=True,
    )
    return time.perf_counter() - began


def inflate_floor(data: bytes) -> float:
    """Seconds zlib alone takes to inflate ``data`` (concatenated members) on one core.

    Fed 1 MiB at a time, as the download arrives. (Feeding the whole file with a cap on the
    output made zlib copy the unread rest of it, ``unconsumed_tail``, after every capped
    call: that measured the copying, 11 MiB/s, not the inflating.)
    """
    import zlib

    view = memoryview(data)
    step = 1 << 20
    began = time.perf_counter()
    d = zlib.decompressobj(31)
    for start in range(0, len(view), step):
        rest: bytes | memoryview = view[start : start + step]
        while rest:
            d.decompress(rest)
            rest = d.unused_data
            if d.eof:
                d = zlib.decompressobj(31)
    return time.perf_counter() - began


def _inflate_rate(size_mib: int) -> float:
    data = build_file(size_mib)
    return len(data) / 2**20 / inflate_floor(data)


def run(size_mib: int, rounds: int = 3) -> dict[str, Any]:
    if shutil.which("curl") is None:
        raise SystemExit("the fetch benchmark needs curl")
    root = Path(__file__).resolve().parents[2]
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.fetch_big", "serve", str(size_mib)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    try:
        assert server.stdout is not None
        spec = json.loads(server.stdout.readline())
        spec["dir"] = os.environ.get("DSAR_BENCH_TMP")  # where the stored copy goes
        mib = spec["size"] / 2**20
        raw, curl, full, gunzip, cpu, main_cpu = [], [], [], [], [], []
        load = [os.getloadavg()[0]]
        peak = start = 0
        for _ in range(rounds):
            raw.append(_child(spec, "raw")["seconds"])
            curl.append(_curl(spec))
            gunzip.append(_curl_gunzip(spec))
            result = _child(spec, "full")
            assert result["sha256"] == spec["sha256"] and result["bytes"] == spec["size"]
            full.append(result["seconds"])
            cpu.append(result["cpu_seconds"])
            main_cpu.append(result["main_thread_cpu_seconds"])
            peak = max(peak, result["peak_rss_kib"])
            start = max(start, result["start_rss_kib"])
        load.append(os.getloadavg()[0])
        return {
            "size_mib": round(mib, 1),
            "curl_mib_s": mib / min(curl),
            "raw_mib_s": mib / min(raw),
            "service_mib_s": mib / min(full),
            "curl_gunzip_mib_s": mib / min(gunzip),
            "inflate_alone_mib_s": _inflate_rate(min(size_mib, 128)),
            "peak_rss_mib": peak / 1024,
            "start_rss_mib": start / 1024,
            "gunzip_s": [round(x, 2) for x in gunzip],
            "curl_s": [round(x, 2) for x in curl],
            "service_s": [round(x, 2) for x in full],
            # CPU the service used (all threads; of it, the calling thread's), to read the
            # wall time against on a shared machine: wall near CPU means no second core.
            "service_cpu_s": [round(x, 2) for x in cpu],
            "service_main_thread_cpu_s": [round(x, 2) for x in main_cpu],
            "load_avg_1m": [round(x, 2) for x in load],
            "raw_s": [round(x, 2) for x in raw],
        }
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=60)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "fetch":
        fetch(json.loads(sys.stdin.read()), sys.argv[2])
    else:
        print(json.dumps(run(int(sys.argv[1])), indent=2))
