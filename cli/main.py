"""The `sead` command line: a thin typer layer over sead.train, sead.export and sead.runtime.

Heavy packages (torch, onnxruntime, tensorrt) are imported inside the commands that use them, so
`sead run` and `sead inspect` work where torch is not installed.
"""
from __future__ import annotations

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


def main() -> None:
    """Entry point: typer handles usage errors (exit 2); a SeadError becomes one line on stderr
    and exit 2, unless --debug asks for the traceback."""
    sys.argv[1:] = _ray_address(sys.argv[1:])
    try:
        app()
    except SeadError as exc:
        if state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
