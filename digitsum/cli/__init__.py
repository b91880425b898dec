"""The command line: each command parses its arguments, calls the library's public API
(``digitsum.train``, ``digitsum.sweep``...) and prints; a module per group of commands. Heavy imports
happen inside the commands: ``digitsum --help`` imports no torch."""

import errno
import json
import math
import sys
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import __version__
from ..errors import UserError
from ..terminal import Terminal

app = typer.Typer(
    name="digitsum",
    help="Train and compare multi-input, multi-output digit models from TOML recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# emoji=False: what a user typed is printed as typed (rich would turn uniform:-1:0.1 into uniform👎0.1)
console = Terminal(emoji=False)
err_console = Terminal(stderr=True, emoji=False)

RecipeArg = Annotated[str, typer.Argument(help="recipe: a TOML file, or a recipe name (digitsum list recipes)", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="override a recipe key, e.g. --set train.epochs=1 (repeatable)", show_default=False),
]
def path_text(text: str) -> str:
    """A path as typed; an empty one (``--out "$UNSET"``) is a usage error (exit 2)."""
    if not text.strip():  # Path("") would mean the working folder
        raise typer.BadParameter("is empty: give a path")
    return text


def _path(text: str) -> Path:
    return Path(path_text(text))


def path_flag(*names: str, **options: Any) -> Any:
    """A ``typer.Option`` holding a path (``parser``: :func:`path_text` keeps the text as typed):
    an empty one is a usage error (exit 2)."""
    options.setdefault("metavar", "PATH")
    options.setdefault("parser", _path)
    return typer.Option(*names, **options)


JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def print_json(data: Any) -> None:
    """``--json`` output: indented, on stdout, nothing else; a NaN or an infinity (a model whose
    weights are NaN) is null, as JSON has no such numbers."""
    print(json.dumps(_finite(data), indent=2, allow_nan=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def say(text: str, *, err: bool = False) -> None:
    """A plain line: no rich markup or highlighting (paths and messages may hold brackets), not wrapped."""
    (err_console if err else console).print(text, highlight=False, markup=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        print(f"digitsum {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")] = False,
    strict_plugins: Annotated[
        bool, typer.Option("--strict-plugins", help="fail (exit 2) if any plugin fails to load; also DIGITSUM_STRICT_PLUGINS=1")
    ] = False,
) -> None:
    """Train and compare multi-input, multi-output digit models from TOML recipes."""
    from ..discovery import strict_from_env

    if strict_plugins or strict_from_env():
        from ..plugin_report import require_all_plugins

        require_all_plugins()


def _refuse_undecodable(arguments: list[str]) -> None:
    """Python hands arguments that are not valid UTF-8 on as lone surrogates, which no file, TOML
    or JSON can hold: refused before anything is written (a run's folder was left half-made)."""
    for argument in arguments:
        if any("\udc80" <= c <= "\udcff" for c in argument):
            shown = argument.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise UserError(f"argument '{shown}' is not valid UTF-8 text; give it in UTF-8")


def main() -> None:
    """The ``digitsum`` executable (and ``python -m digitsum``; tests call it too): user errors
    end in a short message and exit code 2."""
    try:
        _refuse_undecodable(sys.argv[1:])
        app()  # click handles its own usage errors (exit 2); ours come through here
    except UserError as e:
        from rich.markup import escape

        err_console.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:  # a path the file system cannot even look up: the user's
            raise
        name = str(e.filename or "")
        err_console.print(f"error: file name too long ({len(name)} characters): {name[:60]!r}…", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C outside training (loading data, say): nothing was written
        err_console.print("interrupted", highlight=False)
        sys.exit(130)


# Each module registers its commands on the app (they import what is above), in the order
# ``digitsum --help`` lists them: run, doctor, eval, predict, export, show, list, cp, compare...
for _module in ("training", "trained", "recipes", "experiments", "plugins"):
    import_module(f"{__name__}.{_module}")
