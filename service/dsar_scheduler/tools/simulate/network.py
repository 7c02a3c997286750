"""How long a download's body takes in a run: a nominal size per file, drawn from the
workload's distribution, over the workload's bandwidth. The emulated file itself holds a few
events (verified like any other); only its time is that of the nominal size."""

from __future__ import annotations

import math
import random

from dsar_scheduler.tools.simulate.workload import Workload


class Downloads:
    """Nominal sizes (seeded by the file's path, so a run repeats) and the bytes they add."""

    def __init__(self, w: Workload) -> None:
        self._w = w
        self.count = 0
        self.nominal_bytes = 0

    def size(self, path: str, part: int = 0) -> int:
        """Log-normal around the median, capped: the same path always gets the same size."""
        w = self._w
        rng = random.Random(
            f"dsar-size:{w.seed}:{path}:{part}" if part else f"dsar-size:{w.seed}:{path}"
        )
        drawn = rng.lognormvariate(math.log(w.file_median_bytes), w.file_size_sigma)
        return max(1, min(w.file_max_bytes, round(drawn)))

    def body_seconds(self, path: str) -> float:
        """Virtual seconds the body at ``path`` takes on one stream. At 1/scale a download
        stands for ``scale`` of them: its time is that of ``scale`` independent sizes, one after
        another, not ``scale`` times one size (a single 30 MB draw made 20 times longer would
        hold a lane for minutes no full-scale run ever sees)."""
        w = self._w
        parts = max(1, round(w.scale))
        sizes = [self.size(path, part) for part in range(parts)]
        self.count += 1
        self.nominal_bytes += sum(sizes) // parts
        return w.download_seconds(sum(sizes)) / parts
