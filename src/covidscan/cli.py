"""The `covidscan` command line (typer).

Every command has --help; user errors (covidscan.errors.CovidscanError) print as one red line without a
traceback and exit non-zero. Long work shows rich progress. Commands are thin: parse arguments, load
the typed config where needed, call the library.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from rich.console import Console

from covidscan import RESEARCH_NOTICE, __version__
from covidscan.errors import CovidscanError

app = typer.Typer(
    name="covidscan",
    help=f"covidscan: COVID-19 detection on chest X-ray and CT, as a reproducible MLOps pipeline. {RESEARCH_NOTICE}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()

ParamsOption = Annotated[Path, typer.Option("--params", help="params.yaml to read.")]
ProfileOption = Annotated[str | None, typer.Option("--profile", help="Profile to apply (overrides the file's `profile`).")]


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a CovidscanError into one clear line on stderr and a non-zero exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CovidscanError as err:
            console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=err.exit_code) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(code=130) from None

    return wrapper


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`@app.command` plus user-error handling."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        return app.command(*args, **kwargs)(user_errors(func))

    return decorate


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """covidscan command line."""
    from covidscan.environment import quiet_telemetry

    quiet_telemetry()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@command()
def version() -> None:
    """Print the covidscan version."""
    out.print(f"covidscan {__version__}")


@command("check-params")
def check_params(params: ParamsOption = Path("params.yaml"), profile: ProfileOption = None) -> None:
    """Validate params.yaml (and its profiles) and print the active profile."""
    from covidscan.config import load_params

    p = load_params(params, profile=profile)
    out.print(f"{params}: OK (profile '{p.profile}')")


@command("models")
def models(
    params: Annotated[Path | None, typer.Option("--params", help="params.yaml to read (default: ./params.yaml if present, else built-in defaults).")] = None,
    profile: ProfileOption = None,
    num_classes: Annotated[int, typer.Option("--num-classes", min=1, help="Classes of the classifiers.")] = 2,
) -> None:
    """List every network with its input, parameter count, forward GFLOPs (batch 1) and output shape."""
    from rich.table import Table

    from covidscan.config import Params, load_params
    from covidscan.models.zoo import summary_rows

    if params is None and not Path("params.yaml").is_file():
        p = Params() if profile in (None, "paper") else load_params(Path("params.yaml"), profile=profile)
        source = "built-in defaults"
    else:
        p = load_params(params or Path("params.yaml"), profile=profile)
        source = f"{params or 'params.yaml'} (profile '{p.profile}')"
    rows = summary_rows(p.models, p.preprocess, num_classes=num_classes)
    table = Table(title=f"covidscan networks: {source}")
    for col, justify in (("model", "left"), ("input", "left"), ("parameters", "right"), ("GFLOPs", "right"), ("output", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        shape = "x".join(str(n) for n in r["input_shape"])
        if r["error"]:
            table.add_row(r["name"], shape, "-", "-", f"[red]refused: {r['error']}[/]")
        else:
            table.add_row(r["name"], shape, f"{r['params']:,}", f"{r['gflops']:.3f}", str(tuple(r["output_shape"])))
    out.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
