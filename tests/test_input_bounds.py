"""Bounded input for `sead run` (issue #23): no line is held past a limit, an endless input is
refused in one line with exit 2, and the files a run is given (a hard link to the input, a FIFO,
an output that cannot be written, an input that cannot be read) each end as documented."""
import io
import os
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings, strategies as st

from sead.runtime.errors import InputError
from sead.runtime.lines import BLOCK_BYTES, MAX_LINE, copy_lines, iter_line_blocks, iter_lines, line_limit
from sead.runtime.model_file import default_model_path, load_step_model

SEAD = [sys.executable, "-m", "sead.cli"]
needs_models = pytest.mark.skipif(not all(default_model_path(m).is_file() for m in ("addition", "multiplication")),
                                  reason="shipped models not built")


def _drop_file_mode_override() -> None:
    """preexec_fn: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (1, 2) from the bounding set, so
    that the command, run as root, is held to file modes as any user is."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


# root reads and writes through any file mode: its commands run without that power here
FILE_MODES_APPLY = {"preexec_fn": _drop_file_mode_override} if os.geteuid() == 0 else {}


def sead(*args, **run) -> tuple[int, str, str]:
    if "input" not in run:
        run.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.run([*SEAD, *map(str, args)], capture_output=True, timeout=120, **run)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def one_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(word in err for word in words), err


class Endless(io.RawIOBase):
    """A stream of one byte for ever (a /dev/zero that counts what was read from it)."""

    def __init__(self, byte: bytes = b"0"):
        self.byte, self.read_bytes = byte, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        buffer[:] = self.byte * len(buffer)
        self.read_bytes += len(buffer)
        return len(buffer)


def test_a_line_past_the_limit_is_refused_after_reading_little_more_than_the_limit():
    raw = Endless()
    with pytest.raises(InputError) as info:
        list(iter_lines(io.BufferedReader(raw, 4096), 1000, "in.txt"))
    assert str(info.value) == "in.txt:1: the line is longer than 1,000 bytes, more than any problem this model takes"
    assert raw.read_bytes <= BLOCK_BYTES  # one block
    raw = Endless()
    with pytest.raises(InputError, match="in.txt:1: the line is longer than 100,000 bytes"):
        list(iter_line_blocks(io.BufferedReader(raw, 4096), 100_000, "in.txt", block_bytes=1000))
    assert raw.read_bytes <= 100_000 + 6 + 4096  # the limit, a BOM, the line ending, a byte and one buffer
    data = b"\xef\xbb\xbf" + b"1" * 1000 + b"\r\n" + b"2" * 1000 + b"\n" + b"3" * 1001 + b"\n"
    lines = iter_lines(io.BytesIO(data), 1000)
    assert [len(text) for _, text in (next(lines), next(lines))] == [1000, 1000]  # the BOM and CRLF are not counted
    with pytest.raises(InputError, match="<input>:3: the line is longer than 1,000 bytes"):
        next(lines)


def test_an_endless_copy_stops_at_the_limit():
    raw, out = Endless(), io.BytesIO()
    with pytest.raises(InputError, match="standard input:1: the line is longer than 4,096 bytes"):
        copy_lines(raw, out, "standard input", 4096)
    assert raw.read_bytes <= 2 * 4096 + 5
    copy_lines(io.BytesIO(b"12\n" * 10_000), out := io.BytesIO(), "x", 4096)  # short lines: copied whole
    assert out.getvalue() == b"12\n" * 10_000


def test_the_line_limit_follows_the_verified_size():
    assert line_limit(0) == MAX_LINE == 1 << 26
    assert line_limit(200) == 864 and line_limit(10**9) == MAX_LINE


@needs_models
@pytest.mark.parametrize("how", ["-i /dev/zero", "stdin from /dev/zero"])
def test_an_endless_input_is_refused_at_once(how):
    if how == "-i /dev/zero":
        code, out, err = sead("run", "-i", "/dev/zero")
        where = "/dev/zero:1:"
    else:
        with open("/dev/zero", "rb") as zero:
            code, out, err = sead("run", stdin=zero)
        where = "standard input:1:"
    assert code == 2 and out == ""
    one_line(err, where, f"longer than {MAX_LINE:,} bytes")


@needs_models
def test_a_line_longer_than_any_problem_the_model_takes_is_refused():
    # multiplication is checked exact up to its verified size n: 4 n + 64 characters at most
    limit = 4 * load_step_model(default_model_path("multiplication")).metadata.verified_size + 64
    code, out, err = sead("run", "--model", "multiplication", input=b"12*34\n" + b"1" * (limit + 1) + b"*2\n")
    assert code == 2 and out == ""
    one_line(err, f"<stdin>:2: the line is longer than {limit:,} bytes")


@needs_models
def test_an_output_hard_linked_to_the_input_is_refused(tmp_path):
    (tmp_path / "in.txt").write_bytes(b"1+2\n")
    os.link(tmp_path / "in.txt", tmp_path / "link.txt")
    code, out, err = sead("run", "-i", tmp_path / "in.txt", "-o", tmp_path / "link.txt")
    assert code == 2 and out == ""
    one_line(err, "is the input")
    assert (tmp_path / "in.txt").read_bytes() == b"1+2\n"


@needs_models
def test_an_output_fifo_gets_the_answers(tmp_path):
    (tmp_path / "in.txt").write_bytes(b"1+2\n99+1\n")
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert sead("run", "-i", tmp_path / "in.txt", "-o", fifo) == (0, "", "")
    reader.join(60)
    assert got == [b"3\n100\n"]


@needs_models
def test_an_output_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "in.txt").write_bytes(b"1+2\n")
    (tmp_path / "file").write_bytes(b"")
    code, out, err = sead("run", "-i", tmp_path / "in.txt", "-o", tmp_path / "file" / "out.txt")
    assert code == 2 and out == ""
    one_line(err, "cannot write the output (Not a directory)")
    (tmp_path / "ro.txt").write_bytes(b"earlier\n")
    os.chmod(tmp_path / "ro.txt", 0o444)
    code, _, err = sead("run", "-i", tmp_path / "in.txt", "-o", tmp_path / "ro.txt", **FILE_MODES_APPLY)
    assert code == 2 and (tmp_path / "ro.txt").read_bytes() == b"earlier\n"
    one_line(err, "cannot write the output (Permission denied)")


@needs_models
def test_an_input_that_cannot_be_read_is_one_line(tmp_path):
    code, out, err = sead("run", "-i", tmp_path)
    assert code == 2 and out == ""
    one_line(err, "cannot read the input file (Is a directory)")
    (tmp_path / "secret.txt").write_bytes(b"1+2\n")
    os.chmod(tmp_path / "secret.txt", 0)
    code, out, err = sead("run", "-i", tmp_path / "secret.txt", **FILE_MODES_APPLY)
    assert code == 2 and out == ""
    one_line(err, "cannot read the input file (Permission denied)")


def _line_by_line(data: bytes, limit: int) -> list:
    """The reference reader: one readline per line, each line decoded on its own."""
    stream, out, number = io.BytesIO(data), [], 0
    while raw := stream.readline(limit + 5):
        number += 1
        raw = raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        if len(raw) > limit:
            return out + [("too long", number)]
        out.append((number, raw.decode("utf-8", errors="replace")))
    return out


PIECES = [b"\n", b"\r", b"\r\n", b"12", b"+", b"\xef\xbb\xbf", b"\xef", b"\xe2\x82", b"\xff", b"a"]


@settings(max_examples=300, deadline=None, database=None)
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=40), limit=st.sampled_from([3, 5, 10, MAX_LINE]),
       block=st.sampled_from([1, 2, 3, 7, 64, 1 << 20]), buffer=st.sampled_from([1, 16, 8192]))
def test_blocks_of_any_size_read_the_lines_a_line_by_line_reader_reads(pieces, limit, block, buffer):
    """A BOM, CR LF, bare CRs, bytes that are not UTF-8 (split across blocks too) and lines past the
    limit: the lines read in blocks are the reference's, and the same line is refused."""
    data, got = b"".join(pieces), []
    try:
        for first, texts in iter_line_blocks(io.BufferedReader(io.BytesIO(data), buffer), limit, None, block):
            got += list(enumerate(texts, first))
    except InputError as exc:
        got.append(("too long", exc.line))
    assert got == _line_by_line(data, limit)
