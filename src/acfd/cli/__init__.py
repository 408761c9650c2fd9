"""The ``acfd`` command line: a Typer app of thin typed commands over the library (``acfd.predict``,
``acfd.engine``, ``acfd.recognition``, ``acfd.assemble``, the apps); nothing in the library imports it.

Each command group lives in its own module exposing ``register(app)``. Every module is imported at
start-up (the root ``--help`` lists them all), so a command imports the library modules that load
torch and other heavy packages inside its function, marked ``# run time: start-up stays light``.
"""

from __future__ import annotations

import importlib
import logging

import typer

from acfd.cli.errors import ExtrasGroup

app = typer.Typer(
    name="acfd",
    cls=ExtrasGroup,  # a missing optional extra: one line saying what to install
    help="Find faces in cartoons, anime and comics (ACFD detector).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per command group; each defines register(app).
_COMMAND_MODULES = ("models_cmd", "data_cmd", "eval_cmd", "detect_cmd", "train_cmd", "export_cmd", "serve_cmd",
                    "assemble_cmd", "annotate_cmd", "recognize_cmd", "gallery_cmd", "calibrate_cmd",
                    "verifier_cmd")


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )


for _name in _COMMAND_MODULES:
    importlib.import_module(f"acfd.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    app()
