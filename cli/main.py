"""The `sead` command line: a thin typer layer over sead.train, sead.export and sead.runtime.

Heavy packages (torch, onnxruntime, tensorrt) are imported inside the commands that use them, so
`sead run` and `sead inspect` work where torch is not installed.
"""
from __future__ import annotations

import os
import signal
import sys

import typer

from sead import __version__
from sead.runtime.errors import SeadError

app = typer.Typer(
    name="sead",
    help="Train, export and run SEAD models: one local rule iterated until the state settles.\n\n"
    "Examples:\n\n"
    "  echo '99999+1' | sead run\n\n"
    "  sead run --model parity --input bits.txt --format jsonl\n\n"
    "  sead train addition --out addition.pt && sead export addition.pt\n\n"
    "  sead eval addition.pt --lengths 16,1000,100000",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sead {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    state["debug"] = debug


from . import bench_cmd, model_cmds, run_cmd, serve_cmd  # noqa: E402  (commands register themselves on `app`)


def _ray_address(args: list[str]) -> list[str]:
    """`--ray` takes an optional ADDRESS, which click options cannot: alone, it becomes `--ray default`."""
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("default")
    return out


EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as a shell reports a process it killed
EXIT_CLOSED_PIPE = 141  # the reader of stdout went away (`sead run | head -1`), as for SIGPIPE
EXIT_TERMINATED = 143  # SIGTERM, as for a process it killed; outputs are cleaned up first


def main() -> None:
    """Entry point. Exit statuses: 0 done; 1 some problem did not converge (`run`); 2 usage
    errors (typer) and every SeadError, as one line on stderr unless --debug asks for the
    traceback; 130 interrupted (SIGINT); 141 the output pipe was closed; 143 terminated (SIGTERM)."""
    _hold_closed_std_fds()
    signal.signal(signal.SIGTERM, _terminated)  # unwind, so no temporary output file is left behind
    sys.argv[1:] = _ray_address(sys.argv[1:])
    try:
        app()
    except SeadError as exc:
        if state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:  # typer turns Ctrl-C into exit 130 itself; this is for the gaps
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        _quiet_closed_pipe()
    except SystemExit as exc:
        if isinstance(exc.__context__, BrokenPipeError):  # typer exits 1 on a closed pipe: 1 means "not converged"
            _quiet_closed_pipe()
        raise


def _terminated(signum, frame) -> None:
    sys.exit(EXIT_TERMINATED)


def _quiet_closed_pipe() -> None:
    """Nothing more can reach the reader; point stdout at /dev/null so the exit flush is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
    sys.exit(EXIT_CLOSED_PIPE)


def _hold_closed_std_fds() -> None:
    """A shell's `<&-` or `>&-` closes fd 0 or 1 (Python then sets sys.stdin or sys.stdout to
    None, which the commands report). Hold the slot with /dev/null, so that a file opened later
    (an output's temporary file) is never handed fd 1, where a stray print would land in it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            held = os.open(os.devnull, os.O_RDWR)
            if held != fd:
                os.dup2(held, fd)
                os.close(held)
