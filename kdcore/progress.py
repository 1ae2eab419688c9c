"""Progress a user can plan by: done / total and the time left, from the pace so far."""

from __future__ import annotations

import time
from collections.abc import Callable

Log = Callable[[str], None]  # where a stage writes its progress lines (print by default)


def duration(seconds: float) -> str:
    """3725 -> '1h02m', 125 -> '2m05s', 7 -> '7s'."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    """Counts finished units of work (epochs, trials) and estimates the time left.

    The estimate is the time per unit finished since this object was made, times the
    units left; units already done when it was made (a resumed run) do not count
    towards the pace. With several units running at once the elapsed time already
    reflects that, so the estimate needs no concurrency factor.
    """

    def __init__(self, total: int, done: int = 0):
        self.total, self.done = total, done
        self._start_done = done
        self._start = time.perf_counter()

    def advance(self, units: int = 1) -> str:
        """Count ``units`` more as done; return e.g. '4/27 (about 6m10s left)'."""
        self.done += units
        return f"{self.done}/{self.total} ({self.eta()})"

    def eta(self) -> str:
        """'about 6m10s left', 'finished', or 'time left unknown' before the first unit."""
        if self.done >= self.total:
            return "finished"
        counted = self.done - self._start_done
        if counted <= 0:
            return "time left unknown"
        per_unit = (time.perf_counter() - self._start) / counted
        return f"about {duration(per_unit * (self.total - self.done))} left"
