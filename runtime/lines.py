"""Problem files: one problem per line, read in bounded memory.

A final newline is not a line; a blank line anywhere else is an invalid problem; Windows line
endings are accepted, and so is a UTF-8 byte-order mark at the start. Lines are numbered from 1.

Lines are read in blocks of about a megabyte (tens of thousands of short lines: no Python work per
line but the str each becomes). No line is ever held whole past a limit: a line longer than
`limit` bytes is refused as soon as that many bytes of it, or one block, have been read
(`/dev/zero` as input is refused, not read forever). The limit is MAX_LINE, or less for a model
whose verified size bounds its problems (`line_limit`).
"""
from __future__ import annotations

from typing import BinaryIO, Iterator

from .errors import InputError

BOM = b"\xef\xbb\xbf"
MAX_LINE = 1 << 26  # bytes in one line at most, whatever the model (64 MiB)
COPY_CHUNK = 1 << 20
BLOCK_BYTES = 1 << 20  # bytes read at a time: tens of thousands of short lines
SLACK = len(BOM) + 2  # bytes a line may have past its text: a BOM on line 1, then CR LF


def line_limit(size_limit: int = 0) -> int:
    """The longest line worth reading for a model checked exact up to `size_limit` (its
    Runtime.size_limit; 0: no limit). Generous: a problem of size n is about n to 2n + 1
    characters in every task (operands, bits, a ring and its generation count), plus spaces."""
    return min(MAX_LINE, 4 * size_limit + 64) if size_limit > 0 else MAX_LINE


def too_long(limit: int, line: int | None = None, source: str | None = None) -> InputError:
    return InputError(f"the line is longer than {limit:,} bytes, more than any problem this model takes", line, source)


def iter_line_blocks(stream: BinaryIO, limit: int = MAX_LINE, source: str | None = None,
                     block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, list[str]]]:
    """Yield (number of the first line, [text, ...]) for the lines of a binary stream, without
    their endings, reading about block_bytes at a time. A line over `limit` bytes (its ending and
    a BOM aside) raises InputError once the lines before it are yielded, after at most limit + 6
    bytes of it, or one block, were read."""
    number, pieces, held, first, begun = 1, [], 0, True, False  # pieces: the bytes of the unfinished line
    while True:
        # while a line is unfinished, read no further than its limit
        chunk = stream.read(min(block_bytes, limit + SLACK + 1 - held) if held else block_bytes)
        end = not chunk
        if first and chunk:
            while len(chunk) < len(BOM) and BOM.startswith(chunk):  # a short read may split the BOM
                more = stream.read(len(BOM) - len(chunk))
                if not more:
                    break
                chunk += more
            if chunk.startswith(BOM):  # line 1 has begun, even if nothing follows the BOM
                chunk, begun = chunk[len(BOM):], True
            first = False
        cut = chunk.rfind(b"\n")
        if cut < 0 and not end:
            pieces.append(chunk)
            held += len(chunk)
            if held > limit + SLACK:
                raise too_long(limit, number, source)
            continue
        if end and not held and not begun:
            return
        # the lines up to the chunk's last LF, or at the end the last line, which has none
        body, rest = b"".join(pieces) + chunk[:cut], chunk[cut + 1:] if cut >= 0 else b""
        texts, error = _split(body, limit)
        if texts:
            yield number, texts
        if error is not None:
            raise too_long(limit, number + error, source)
        number += len(texts)
        pieces, held, begun = ([rest], len(rest), False) if rest else ([], 0, False)
        if cut < 0:
            return
        if held > limit + SLACK:
            raise too_long(limit, number, source)


def _split(body: bytes, limit: int) -> tuple[list[str], int | None]:
    """The lines of body (joined by LF, no final LF), each without one CR at its end, up to the
    first longer than limit bytes. -> (texts, the offset of that line or None)."""
    error = None
    if len(body) > limit:
        raws = body.split(b"\n")
        if max(map(len, raws)) > limit:  # some line may be too long (a CR aside): find the first
            error = next((i for i, raw in enumerate(raws) if len(raw) - raw.endswith(b"\r") > limit), None)
        if error is not None:
            if error == 0:
                return [], 0
            body = b"\n".join(raws[:error])
    # bytes that are not UTF-8 become U+FFFD, which every task rejects by position; decoding a
    # block at once equals decoding it line by line, since no multi-byte sequence holds a LF
    texts = body.decode("utf-8", errors="replace").split("\n")
    if b"\r" in body:
        texts = [t[:-1] if t.endswith("\r") else t for t in texts]
    return texts, error


def iter_lines(stream: BinaryIO, limit: int = MAX_LINE, source: str | None = None) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) from a binary stream, line by line (iter_line_blocks)."""
    for first, texts in iter_line_blocks(stream, limit, source):
        yield from enumerate(texts, first)


def copy_lines(src: BinaryIO, dst: BinaryIO, name: str, limit: int = MAX_LINE) -> None:
    """Copy a stream in chunks, refusing it (InputError naming `name` and the line) as soon as a
    line passes `limit` bytes: an endless line (/dev/zero) fails once it passes limit + SLACK bytes,
    read in chunks of at most `limit` (so within about twice `limit`), not at a full disk."""
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
