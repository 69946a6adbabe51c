"""The `sead` command line: a thin typer layer over sead.train, sead.export and sead.runtime.

Every command is a plain function in its own module, registered here; nothing imports `app`
back. Heavy packages (torch, onnxruntime, tensorrt) are imported inside the commands that use
them, so `sead run` and `sead inspect` work where torch is not installed.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
from dataclasses import dataclass

import typer
from typer.core import TyperGroup

from sead import __version__
from sead.runtime.errors import InternalError, SeadError
from . import bench_cmd, model_cmds, run_cmd, serve_cmd

EXIT_INTERNAL = 1  # a bug in sead (shared with `run`'s "some problem did not converge")
EXIT_BAD_INPUT = 2  # as typer's usage errors
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as a shell reports a process it killed
EXIT_CLOSED_PIPE = 141  # the reader of stdout went away (`sead run | head -1`), as for SIGPIPE
EXIT_TERMINATED = 143  # SIGTERM, as for a process it killed; outputs are cleaned up first


@dataclass(frozen=True)
class Settings:
    """The root options, kept on typer's context (ctx.obj) for every command."""

    debug: bool = False


class Commands(TyperGroup):
    """The root command: reports what a command raised, by kind, in one place."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            debug = ctx.obj.debug if isinstance(ctx.obj, Settings) else False
            if debug or _typers_own(exc) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE):
                raise  # a traceback asked for; usage errors and exits; a closed pipe, which main() keeps quiet
            status, line = describe_error(exc)
            typer.echo(line, err=True)
            raise typer.Exit(status) from None


def _typers_own(exc: Exception) -> bool:
    """Usage errors, typer.Exit and Abort: typer reports them itself (newer typers carry their own
    copy of click, so these come from either package)."""
    return type(exc).__module__.partition(".")[0] in ("typer", "click")


def describe_error(exc: Exception) -> tuple[int, str]:
    """-> (exit status, one line for stderr): bad input is the user's to fix (2); anything else is
    a bug in sead (1), reported as such (its first line: --debug shows the whole traceback)."""
    if isinstance(exc, SeadError) and not isinstance(exc, InternalError):
        return EXIT_BAD_INPUT, f"error: {exc}"
    lines = str(exc).strip().splitlines()
    what = (lines[0] + (" ..." if len(lines) > 1 else "")) if lines else "(no message)"
    if not isinstance(exc, InternalError):
        what = f"{type(exc).__name__}: {what}"
    return EXIT_INTERNAL, f"internal error: {what} (please report it)"


app = typer.Typer(
    cls=Commands,
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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sead {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors, and the engines' "
                               "own warnings (ONNX Runtime logs errors only otherwise)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    ctx.obj = Settings(debug=debug)
    if debug:
        os.environ["SEAD_DEBUG"] = "1"  # read where an engine first imports its backend (runtime/engines/ort.py)


app.command()(run_cmd.run)
app.command()(model_cmds.train)
app.command()(model_cmds.export)
app.command()(model_cmds.inspect)
app.command(name="eval")(model_cmds.eval_)
app.command()(bench_cmd.bench)
app.command()(serve_cmd.serve)


def main() -> None:
    """Entry point. Exit statuses: 0 done; 1 some problem did not converge (`run`), or an internal
    error (a bug in sead: InternalError or any unexpected exception); 2 usage errors (typer) and
    every other SeadError (bad input, files, models), as one line on stderr unless --debug asks
    for the traceback; 130 interrupted (SIGINT); 141 the output pipe was closed; 143 terminated
    (SIGTERM)."""
    _hold_closed_std_fds()
    signal.signal(signal.SIGTERM, _terminated)  # unwind, so no temporary output file is left behind
    sys.argv[1:] = _ray_address(sys.argv[1:])
    try:
        app()
    except KeyboardInterrupt:  # typer turns Ctrl-C into exit 130 itself; this is for the gaps
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        _quiet_closed_pipe()
    except SystemExit as exc:
        if isinstance(exc.__context__, BrokenPipeError):  # typer exits 1 on a closed pipe: 1 means "not converged"
            _quiet_closed_pipe()
        raise


def _ray_address(args: list[str]) -> list[str]:
    """`--ray` takes an optional ADDRESS, which click options cannot: alone, it becomes `--ray default`."""
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("default")
    return out


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
