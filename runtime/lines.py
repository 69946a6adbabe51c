"""Problem files: one problem per line, read in bounded memory.

A final newline is not a line; a blank line anywhere else is an invalid problem; Windows line
endings are accepted, and so is a UTF-8 byte-order mark at the start. Lines are numbered from 1.
"""
from __future__ import annotations

from typing import BinaryIO, Iterator

BOM = b"\xef\xbb\xbf"


def iter_lines(stream: BinaryIO) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) from a binary stream, without the line ending."""
    number = 0
    for raw in stream:
        number += 1
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        # bytes that are not UTF-8 become U+FFFD, which every task rejects by position
        yield number, raw.decode("utf-8", errors="replace")
