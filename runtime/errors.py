"""One exception family for the whole toolkit; the CLI catches SeadError once and prints one line."""


class SeadError(Exception):
    """Base class of every error sead raises on purpose."""


class InputError(SeadError):
    """A problem line that is not valid for its task. `line` is 1-based when known."""

    def __init__(self, reason: str, line: int | None = None, source: str | None = None):
        self.reason = reason
        self.line = line
        self.source = source
        super().__init__(self.located())

    def located(self) -> str:
        if self.line is None:
            return self.reason
        return f"{self.source or '<input>'}:{self.line}: {self.reason}"


class ModelFileError(SeadError):
    """A checkpoint or .onnx file that is missing, unreadable, unsafe or of an unknown format."""


class InternalError(SeadError):
    """A bug in sead, not a problem with the input: the CLI exits 1 and asks for a report."""


class OutputError(SeadError):
    """An output that cannot be written (a missing folder, a full disk, a closed stream), or one
    that would overwrite an input."""


class EngineUnavailable(SeadError):
    """An engine whose package or device is missing on this machine. `quiet`: only its package is
    missing, so `--engine auto` moves on without a word; otherwise auto says why it moved on."""

    def __init__(self, message: str, quiet: bool = False):
        super().__init__(message)
        self.quiet = quiet


class ExportMismatch(SeadError):
    """The exported ONNX step disagrees with the PyTorch step."""


class QueueFull(SeadError):
    """The runtime's queue would exceed max_queue_cells: the call is refused at once."""


class RuntimeClosed(SeadError):
    """The runtime was closed; it takes no more work."""
