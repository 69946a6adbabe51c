"""Problem files: one problem per line, read in bounded memory.

A final newline is not a line; a blank line anywhere else is an invalid problem; Windows line
endings are accepted, and so is a UTF-8 byte-order mark at the start. Lines are numbered from 1.

No line is ever held whole past a limit: a line longer than `limit` bytes is refused as soon as
that many bytes of it have been read (`/dev/zero` as input is refused, not read forever). The
limit is MAX_LINE, or less for a model whose verified size bounds its problems (`line_limit`).
"""
from __future__ import annotations

from typing import BinaryIO, Iterator

from .errors import InputError

BOM = b"\xef\xbb\xbf"
MAX_LINE = 1 << 26  # bytes in one line at most, whatever the model (64 MiB)
COPY_CHUNK = 1 << 20
SLACK = len(BOM) + 2  # bytes a line may have past its text: a BOM on line 1, then CR LF


def line_limit(size_limit: int = 0) -> int:
    """The longest line worth reading for a model checked exact up to `size_limit` (its
    Runtime.size_limit; 0: no limit). Generous: a problem of size n is about n to 2n + 1
    characters in every task (operands, bits, a ring and its generation count), plus spaces."""
    return min(MAX_LINE, 4 * size_limit + 64) if size_limit > 0 else MAX_LINE


def too_long(limit: int, line: int | None = None, source: str | None = None) -> InputError:
    return InputError(f"the line is longer than {limit:,} bytes, more than any problem this model takes", line, source)


def iter_lines(stream: BinaryIO, limit: int = MAX_LINE, source: str | None = None) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) from a binary stream, without the line ending. Raises InputError
    for a line over `limit` bytes (its ending and a BOM aside) after reading at most limit + 5."""
    number = 0
    while True:
        raw = stream.readline(limit + SLACK)  # a line cut short here is over the limit: never yielded
        if not raw:
            return
        number += 1
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > limit:  # all of it, or the first limit + SLACK bytes of a longer line
            raise too_long(limit, number, source)
        # bytes that are not UTF-8 become U+FFFD, which every task rejects by position
        yield number, raw.decode("utf-8", errors="replace")


def copy_lines(src: BinaryIO, dst: BinaryIO, name: str, limit: int = MAX_LINE) -> None:
    """Copy a stream in chunks, refusing it (InputError naming `name` and the line) as soon as a
    line passes `limit` bytes: an endless line (/dev/zero) fails after limit + 2 bytes, not at a
    full disk."""
    chunk_size = min(COPY_CHUNK, limit)  # a line inside one chunk is then never too long
    run = lines = 0  # bytes since the last newline; newlines so far
    while True:
        chunk = src.read(chunk_size)
        if not chunk:
            return
        newline = chunk.rfind(b"\n")
        if newline < 0:
            run += len(chunk)
        else:
            lines += chunk.count(b"\n")
            run = len(chunk) - newline - 1
        if run > limit + SLACK:
            raise too_long(limit, lines + 1, name)
        dst.write(chunk)
