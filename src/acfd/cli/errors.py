"""The one error path of every ``acfd`` command: one line ``error: <file>: <problem>``, then exit.

Use it in every command instead of tracebacks or private ``_fail`` helpers:

* :func:`fail` prints ``error: <message>`` on stderr and exits (``raise fail(...)`` reads well in
  code that must show it never returns; calling it alone works too).
* :func:`one_line_errors` (a context manager, or a decorator on a command function) turns the
  exceptions users cause -- a missing or unreadable file (``FileNotFoundError``,
  ``PermissionError``, any ``OSError``), bad values (``ValueError``, including our
  :class:`~acfd.utils.FileReadError`), corrupt ``.safetensors`` / ``torch.load`` files -- into
  that one line. :func:`describe` is the mapping on its own (for batch commands that report a
  failed file and go on).
* :func:`check_output_file` / :func:`check_output_dir` check BEFORE the work that an output can
  be written (nothing is created by the check), so a long run never fails at its very end.
* :func:`check_not_inputs` refuses an output folder/file that would overwrite an input.
* :func:`check_device` turns ``--device`` into a ``torch.device`` with one-line errors
  (``foo``, ``cuda`` without a GPU, ``cuda:3`` with one GPU).
* :func:`require_extra` checks up front that an optional extra is installed; :class:`ExtrasGroup`
  (the ``acfd`` group) turns a missing optional module met later into the same one line:
  ``acfd serve needs the 'serve' extra: pip install 'acfd[serve]'``.

Exit codes, the same in every command: 0 success, :data:`EXIT_ERROR` (1) the command could not
do its job (bad input, unwritable output, some inputs failed), :data:`EXIT_USAGE` (2) invalid
options (Click's own code; ``acfd detect`` also uses it when nothing at all could be read) and
:data:`EXIT_INTERRUPTED` (130) Ctrl-C.

Example::

    from acfd.cli.errors import check_output_file, fail, one_line_errors

    @one_line_errors
    def my_command(src: Path, out: Path) -> None:
        check_output_file(out, "--out")
        if not src.is_file():
            raise fail(f"{src}: file not found")
        ...
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import typer
from typer.core import TyperGroup

#: The command could not do its job (bad input, unwritable output, failed inputs).
EXIT_ERROR = 1
#: Invalid options (Click's usage-error code).
EXIT_USAGE = 2
#: Interrupted by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

_MAX_LEN = 400
F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """An error to show as one line and exit with ``code`` (raise it where typer is not at hand).

    Args:
        message: the line, without the ``error:`` prefix; should name the file and the problem.
        code: the exit code.
    """

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    if len(lines) > 1 and line.endswith(":"):  # "Error(s) in loading state_dict for X:" -> and the next
        line = f"{line} {lines[1]}"
    return line if len(line) <= _MAX_LEN else line[: _MAX_LEN - 3] + "..."


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: <message>`` (one line) on stderr and exit with ``code``.

    Args:
        message: what went wrong; name the file and the problem (``"a.csv: file not found"``).
        code: the exit code (:data:`EXIT_ERROR` unless there is a reason for another).

    Raises:
        typer.Exit: always.
    """
    typer.echo(f"error: {_one_line(message)}", err=True)
    raise typer.Exit(code)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    if isinstance(exc, NotADirectoryError):
        return "a parent of this path is a file, not a folder"
    return exc.strerror or str(exc) or type(exc).__name__


def describe(exc: BaseException) -> str:
    """One line for an exception: ``<file>: <problem>`` when the exception knows the file.

    ``FileReadError`` and our own messages already start with the file; an ``OSError`` with a
    ``filename`` becomes ``<filename>: <reason>`` (``file not found``, ``permission denied``...);
    anything else is its first line, prefixed with the exception type when the message is empty
    or says nothing (``invalid load key, 'x'.`` from ``torch.load``).

    Args:
        exc: the exception.
    """
    if isinstance(exc, CliError):
        return _one_line(str(exc))
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {_os_reason(exc)}"
    text = _one_line(str(exc))
    if isinstance(exc, OSError) and not text:
        return _os_reason(exc)
    if not text or isinstance(exc, (pickle.UnpicklingError, EOFError)):
        return f"{type(exc).__name__}{': ' + text if text else ''}"
    return text


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that users cause (bad files, bad values), shown as one line."""
    kinds: list[type[BaseException]] = [
        CliError, OSError, ValueError, KeyError, pickle.UnpicklingError, EOFError
    ]
    with contextlib.suppress(ImportError):
        from safetensors import SafetensorError

        kinds.append(SafetensorError)
    return tuple(kinds)


@contextlib.contextmanager
def _guard(context: str | None, code: int, also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise
    except (*_user_errors(), *also) as exc:
        line = describe(exc)
        fail(f"{context}: {line}" if context else line, exc.code if isinstance(exc, CliError) else code)


def one_line_errors(
    func: F | None = None,
    *,
    context: str | None = None,
    code: int = EXIT_ERROR,
    also: tuple[type[BaseException], ...] = (),
) -> Any:
    """Map user-caused exceptions to one ``error:`` line and an exit code.

    Use as a context manager (``with one_line_errors(context="cannot load the model"):``) or as
    a decorator on a command function (``@one_line_errors``). Programming errors
    (``TypeError``, ``AttributeError``...) still show their traceback: those are bugs to report.

    Args:
        func: the command function when used as a bare decorator.
        context: a prefix for the line (``"<context>: <problem>"``).
        code: the exit code (a :class:`CliError` carries its own).
        also: more exception types to show as one line here (``RuntimeError`` around a call
            known to raise it for user-caused reasons, e.g. an export without CUDA).
    """
    if func is None:
        return _guard(context, code, also)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _guard(context, code, also):
            return func(*args, **kwargs)

    return wrapper


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_dir(folder: Path, label: str, shown: Path) -> None:
    """Raise :class:`CliError` unless a file can be created in the existing ``folder``."""
    if not folder.is_dir():
        raise CliError(f"{label}{shown}: cannot write there: {folder} is a file, not a folder")
    try:  # a real probe: os.access says yes to root even on read-only mounts
        fd, tmp = tempfile.mkstemp(prefix=".acfd-write-test.", dir=folder)
    except OSError as exc:
        raise CliError(f"{label}{shown}: cannot write in {folder} ({_os_reason(exc)})") from None
    os.close(fd)
    os.unlink(tmp)


def _label(what: str | None) -> str:
    return f"{what} " if what else ""


def check_output_file(path: str | os.PathLike[str], what: str | None = None) -> Path:
    """Check that ``path`` can be written (created or replaced) before any work is done.

    Nothing is created: missing parent folders are fine when the nearest existing one is
    writable (the writers create them).

    Args:
        path: the output file.
        what: the option it came from (``"-o"``, ``"--json"``), used in the message.

    Raises:
        CliError: ``path`` is a folder, or its folder cannot be written.
    """
    target = Path(path)
    label = _label(what)
    if target.is_dir():
        raise CliError(f"{label}{target}: is a folder; give a file name")
    parent = target.parent if str(target.parent) else Path(".")
    _probe_dir(_nearest_existing(parent), label, target)
    return target


def check_output_dir(path: str | os.PathLike[str], what: str | None = None) -> Path:
    """Check that files can be written in folder ``path`` (created later if missing).

    Args:
        path: the output folder.
        what: the option it came from, used in the message.

    Raises:
        CliError: ``path`` is a file, or no file can be created there.
    """
    target = Path(path)
    label = _label(what)
    if target.exists() and not target.is_dir():
        raise CliError(f"{label}{target}: is a file, not a folder")
    _probe_dir(_nearest_existing(target), label, target)
    return target


def check_not_inputs(
    output: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str]],
    what: str | None = None,
) -> None:
    """Refuse an output file that is one of the inputs (inputs are never overwritten).

    Args:
        output: the output file.
        inputs: the input files.
        what: the option the output came from.

    Raises:
        CliError: ``output`` resolves to an input file.
    """
    out = Path(output).resolve()
    for p in inputs:
        if Path(p).resolve() == out:
            raise CliError(f"{_label(what)}{output}: would overwrite the input {p}; choose another name")


#: The top-level modules of each optional extra of ``pyproject.toml`` (``pip install 'acfd[serve]'``).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "starlette", "uvicorn", "pydantic_settings", "jinja2"),
    "recognition": ("faiss",),
    "train": ("sklearn",),
    "ray": ("ray", "pyarrow"),
}


def missing_extra(command: str, extra: str) -> str:
    """The line for ``command`` run without its optional ``extra``: what to install."""
    return f"{command} needs the '{extra}' extra: pip install 'acfd[{extra}]'"


def extra_of(exc: ImportError) -> str | None:
    """The extra that installs the module ``exc`` failed to import; ``None`` if it is no optional one."""
    top = (exc.name or "").partition(".")[0]
    return next((extra for extra, modules in EXTRA_MODULES.items() if top in modules), None)


def require_extra(extra: str, command: str) -> None:
    """Check, before any work, that the modules of ``extra`` are installed (nothing is imported).

    Raises:
        CliError: one of them is missing; the message says what to install.
    """
    import importlib.util

    if any(importlib.util.find_spec(module) is None for module in EXTRA_MODULES[extra]):
        raise CliError(missing_extra(command, extra))


class ExtrasGroup(TyperGroup):
    """The ``acfd`` command group: a command that imports a missing optional dependency ends with
    one line naming the extra to install (:func:`missing_extra`) instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            extra = extra_of(exc)
            if extra is None:
                raise
            fail(missing_extra(f"{ctx.command_path} {ctx.invoked_subcommand}", extra))


def check_device(device: str) -> Any:
    """``--device`` as a ``torch.device`` (``"cpu"`` as it is: checking it needs no torch), with
    one-line errors for what cannot run here.

    Args:
        device: ``cpu``, ``cuda``, ``cuda:1``, ``mps``...

    Raises:
        CliError: an unknown device, or CUDA/MPS that this machine does not have.
    """
    from acfd.utils import resolve_device

    if str(device).strip() == "cpu":  # always there: no torch import to check it (start-up time)
        return "cpu"
    try:
        return resolve_device(device)
    except ValueError as exc:
        raise CliError(f"--device {exc}") from None


__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "EXTRA_MODULES",
    "CliError",
    "ExtrasGroup",
    "check_device",
    "check_not_inputs",
    "check_output_dir",
    "check_output_file",
    "describe",
    "extra_of",
    "fail",
    "missing_extra",
    "one_line_errors",
    "require_extra",
]
