"""Small tile windows on the host: a GPU engine whose latency-bound calls run on `ort` instead.

A long tape's few active tiles make windows of about a thousand cells, and a carry chain or a
parity front runs thousands of such calls one after another: latency, not arithmetic. On an H200
a cl window step took 23-29 us (bench/results/gpu_check_h200.json); `ort` on 2 cores runs a
lookup window step of 321 cells in 1.4 us, about 4 ns a cell (window_forms_ort_cpu.json), so the
host wins below about 25 us / 4 ns, some 6,000 cells. bench/gpu_check.py times both placements.
"""
from __future__ import annotations

import sys
import threading
from typing import Callable

import numpy as np

from ..errors import EngineUnavailable

HOST_WINDOW_CELLS = 1 << 12


class HostWindows:
    """The Engine protocol (runtime/engines/protocol.py) over a device engine, whose batches and
    larger tile-window calls it runs, and a host engine (made by `make_host` on first use) for
    tile-window and readout calls of fewer than `cells` cells. Both are exact and give the same
    states, so a round may mix them. Where the host engine cannot start (no onnxruntime), every
    call stays on the device. host_calls, device_calls: window and readout calls run on each."""

    def __init__(self, device, make_host: Callable[[], object], cells: int = HOST_WINDOW_CELLS):
        self.device, self.make_host, self.cells = device, make_host, cells
        self.name, self.k_choices, self.workers = device.name, device.k_choices, device.workers
        self.batch_cells, self.max_row_cells = device.batch_cells, device.max_row_cells
        self.host_calls = self.device_calls = 0
        self._host = None
        self._lock = threading.Lock()

    def max_rows(self, row_cells: int) -> int:
        return self.device.max_rows(row_cells)

    def start(self, codes, wrap=False, generations=False, state_codes=None):
        return self.device.start(codes, wrap=wrap, generations=generations, state_codes=state_codes)

    def _engine_for(self, codes: np.ndarray):
        with self._lock:
            if codes.size < self.cells and self._host is None:
                try:
                    self._host = self.make_host()
                except EngineUnavailable as exc:
                    print(f"sead: engine '{self.name}' runs its small tile windows itself ({exc})",
                          file=sys.stderr, flush=True)
                    self.cells = 0
            on_host = codes.size < self.cells
            if on_host:
                self.host_calls += 1
            else:
                self.device_calls += 1
        return self._host if on_host else self.device

    def run_windows(self, codes, state_codes, k, owned=None):
        return self._engine_for(codes).run_windows(codes, state_codes, k, owned)

    def classify(self, codes, state_codes):
        return self._engine_for(codes).classify(codes, state_codes)

    def close(self) -> None:
        if self._host is not None:
            self._host.close()
        self.device.close()
