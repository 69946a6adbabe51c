"""`sead bench`: throughput of an engine against a naive PyTorch loop and the machine's roofline."""
from __future__ import annotations

from .main import app  # noqa: F401  (filled in below)
