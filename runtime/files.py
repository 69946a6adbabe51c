"""Files in and out, safely: inputs of any kind made re-readable, outputs written whole or not at all.

- `open_input(path)`: a seekable binary stream at offset 0. A regular file is read in place;
  anything else (a pipe, a FIFO, /dev/stdin, a terminal) is copied to a temporary file first,
  because the CLI reads its input twice (validate, then solve); a line too long to be a problem
  stops the copy (lines.copy_lines), so an endless stream without newlines is refused.
- `Output(path)`: a regular file (new or existing) is written to a temporary file beside it and
  renamed over it only when the `with` block ends without an error, so Ctrl-C, a full disk or a
  bad line leave any earlier file as it was. Character devices (/dev/null), FIFOs and '-'
  (stdout) are written directly: they cannot be renamed over.
- `refuse_same_file(output, inputs)`: an output that is one of the inputs (the same inode, even
  through a symlink or a hard link) is refused before anything is read or written.

Every failure is a SeadError with one line that names the file; a closed pipe is left to the
caller (BrokenPipeError), which ends quietly.
"""
from __future__ import annotations

import os
import stat
import sys
import tempfile
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from .errors import InputError, OutputError
from .lines import copy_lines


def _stat(target: str | int) -> os.stat_result | None:
    try:
        return os.fstat(target) if isinstance(target, int) else os.stat(target)
    except OSError:
        return None


def refuse_same_file(output: str, inputs: dict[str, str | int]) -> None:
    """Raise OutputError if `output` is the same file as any of `inputs` ({what: path or fd})."""
    if output == "-":
        return
    out = _stat(output)
    if out is None or not stat.S_ISREG(out.st_mode):
        return  # a new file, or a device such as /dev/null: writing it loses nothing
    for what, source in inputs.items():
        src = _stat(source)
        if src is not None and (src.st_dev, src.st_ino) == (out.st_dev, out.st_ino):
            raise OutputError(f"{output}: is the {what}; writing it would destroy it (choose another output)")


@contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """'-' is standard input. -> a seekable binary stream at offset 0, closed on exit."""
    if path == "-":
        if sys.stdin is None:
            raise InputError("standard input is closed; give --input FILE or pipe the problems in")
        raw = os.fdopen(os.dup(sys.stdin.fileno()), "rb")  # closing ours leaves stdin open
        name = "standard input"
    else:
        try:
            raw = open(path, "rb")
        except OSError as exc:
            raise InputError(f"{path}: cannot read the input file ({exc.strerror})") from None
        name = path
    with raw:
        if stat.S_ISREG(os.fstat(raw.fileno()).st_mode) and raw.seekable() and raw.tell() == 0:
            yield raw
            return
        with tempfile.TemporaryFile(prefix="sead-input-") as spool:
            try:
                copy_lines(raw, spool, name)
            except OSError as exc:
                raise InputError(f"{name}: cannot copy the input to a temporary file ({exc.strerror})") from None
            spool.seek(0)
            yield spool


class Output:
    """`with Output(path) as out: out.write(text)`: the file appears, whole, only on success.

    The temporary file is made when the block starts, so an output that cannot be written is
    refused before any work. binary=True takes bytes. The new file gets the mode of the file it
    replaces, or 0666 less the umask; a symlink is followed, so the link stays and its target
    is replaced.
    """

    def __init__(self, path: str | os.PathLike, binary: bool = False):
        self.path, self.binary = str(path), binary
        self.name = "standard output" if self.path == "-" else self.path
        self._stream = None
        self._tmp: str | None = None  # the temporary file, while there is one
        self._target = ""  # the real path it replaces (a symlink resolved)

    def __enter__(self) -> "Output":
        if self.path == "-":
            self._stream = sys.stdout.buffer if self.binary and sys.stdout else sys.stdout
            if self._stream is None:
                raise OutputError("standard output is closed; give --output FILE")
            return self
        target = self._target = os.path.realpath(self.path)
        st = _stat(target)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{self.path}: is a directory; give a file name")
        if st is not None and not os.access(target, os.W_OK):  # a rename could replace it; a write could not
            raise OutputError(f"{self.path}: cannot write the output (Permission denied)")
        try:
            if st is not None and not stat.S_ISREG(st.st_mode):  # /dev/null, a FIFO: write in place
                self._stream = open(target, "wb" if self.binary else "w", **self._text())
                return self
            folder, name = os.path.split(target)
            fd, self._tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".sead-tmp", dir=folder)
            os.chmod(self._tmp, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
            self._stream = os.fdopen(fd, "wb" if self.binary else "w", **self._text())
        except OSError as exc:
            self._discard()
            raise OutputError(f"{self.name}: cannot write the output ({exc.strerror})") from None
        return self

    @property
    def replaces_on_success(self) -> bool:
        """Writes go to a temporary file that replaces the output only when the block succeeds
        (a regular file; not stdout, a device or a FIFO)."""
        return self._tmp is not None

    def _text(self) -> dict:
        return {} if self.binary else {"encoding": "utf-8", "newline": "\n"}

    def write(self, data) -> None:
        try:
            self._stream.write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"{self.name}: cannot write the output ({exc.strerror})") from None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._stream.flush()
            if self._tmp is not None:
                os.fsync(self._stream.fileno())
                self._stream.close()
                os.replace(self._tmp, self._target)
                self._tmp = None
            elif self._stream not in (sys.stdout, getattr(sys.stdout, "buffer", None)):
                self._stream.close()
        except BrokenPipeError:
            self._discard()
            raise
        except OSError as err:  # `exc` is the block's exception, above
            self._discard()
            raise OutputError(f"{self.name}: cannot write the output ({err.strerror})") from None

    def _discard(self) -> None:
        """Close without keeping anything: the temporary file goes, the target stays as it was."""
        stream, self._stream = self._stream, None
        if stream is not None and stream not in (sys.stdout, getattr(sys.stdout, "buffer", None)):
            try:
                stream.close()
            except OSError:
                pass  # the write already failed; the temporary file is removed below
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass
            self._tmp = None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Make `folder` if needed and prove a file can be created in it (before hours of work)."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write into this folder ({exc.strerror})") from None
