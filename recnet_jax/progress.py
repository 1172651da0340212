"""Progress lines with an ETA in the absl log, for loops over files or images.

    progress = Progress(total=len(files), what="photos")
    for f in files:
        ...
        progress.update()          # logs "photos: 3/10 (30%), 12 s elapsed, ETA 28 s" now and then

Logs at most every ``every_s`` seconds (and always the last item), only where ``enabled`` (pass
``jax.process_index() == 0`` on several hosts).
"""

from __future__ import annotations

import time

from absl import logging


def format_seconds(s: float) -> str:
    """12 s, 3 min 5 s, 2 h 04 min."""
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


class Progress:
    """Counts finished items and logs progress with an ETA (the mean time per item so far)."""

    def __init__(self, total: int, what: str, *, every_s: float = 10.0, enabled: bool = True):
        self.total, self.what, self.every_s, self.enabled = total, what, every_s, enabled
        self.done = 0
        self.start = time.perf_counter()
        self._last_log = self.start

    def update(self, n: int = 1, note: str = "") -> None:
        """Adds ``n`` finished items (0: nothing to report)."""
        if n == 0:
            return
        self.done += n
        now = time.perf_counter()
        if not self.enabled or (now - self._last_log < self.every_s and self.done < self.total):
            return
        self._last_log = now
        elapsed = now - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        pct = 100.0 * self.done / max(self.total, 1)
        logging.info("%s: %d/%d (%.0f%%), %s elapsed, ETA %s%s", self.what, self.done, self.total,
                     pct, format_seconds(elapsed), format_seconds(eta), f" ({note})" if note else "")
