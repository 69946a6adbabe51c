"""Progress of a `sead run` on the terminal (tqdm on stderr, only when stderr is a terminal).

The bar counts problems answered. While a long tape is in flight it also shows that tape's steps
so far and how many of its tiles are active: a carry chain of 10^6 nines is one problem for
about 3 s on 2 cores (docs/runtime.md), longer ones for longer, and the bar alone would sit still.
"""
from __future__ import annotations

import os
import sys
import threading

POLL_SECONDS = 0.25
SHOW_AFTER_SECONDS = 0.5  # nothing for a solve that ends sooner


class RunProgress:
    """with RunProgress(runtime, total): ... polls runtime.stats() and runtime.progress() in a thread."""

    def __init__(self, runtime, total: int, enabled: bool | None = None):
        self.runtime, self.total = runtime, total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> "RunProgress":
        if self.enabled:
            self.start = self.runtime.stats()["problems_solved"]
            self.bar = None
            self.thread = threading.Thread(target=self._poll, name="sead-progress", daemon=True)
            self.thread.start()
        return self

    def _poll(self) -> None:
        if self.stop.wait(SHOW_AFTER_SECONDS):
            return
        from tqdm import tqdm

        try:
            width, height = os.get_terminal_size(sys.stderr.fileno())
        except OSError:
            width = height = 0
        # a terminal that reports no size (a bare pty) still gets a bar: tqdm would hide it
        self.bar = tqdm(total=self.total, unit="problem", file=sys.stderr, ncols=width or 100, nrows=height or 24,
                        leave=False)
        while True:
            self._draw()
            if self.stop.wait(POLL_SECONDS):
                return

    def _draw(self) -> None:
        done = self.runtime.stats()["problems_solved"] - self.start
        self.bar.update(max(0, min(done, self.total) - self.bar.n))
        tapes = self.runtime.progress()
        if tapes:
            t = max(tapes, key=lambda t: t["cells"])
            more = f" (+{len(tapes) - 1} more)" if len(tapes) > 1 else ""
            self.bar.set_postfix_str(f"{t['cells']:,}-cell tape: step {t['steps']:,}, "
                                     f"{t['active_tiles']:,}/{t['tiles']:,} tiles active{more}", refresh=False)
        else:
            self.bar.set_postfix_str("", refresh=False)
        self.bar.refresh()

    def __exit__(self, *exc) -> None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join()
            if self.bar is not None:
                self.bar.close()
