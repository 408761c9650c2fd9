"""The shared CLI error path (acfd.cli.errors): one line, the file named, checks before the work."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from acfd.cli.errors import (
    EXIT_ERROR,
    CliError,
    check_device,
    check_not_inputs,
    check_output_dir,
    check_output_file,
    describe,
    fail,
    one_line_errors,
)
from acfd.utils import FileReadError


def _run(func) -> typer.testing.Result:
    app = typer.Typer()
    app.command("func")(func)
    app.command("other")(lambda: None)  # two commands: no implicit single-command mode
    return CliRunner().invoke(app, ["func"])


def test_fail_prints_one_line_and_exits() -> None:
    def func() -> None:
        fail("a.csv: cannot read it:\nsecond line\nthird", 3)

    res = _run(func)
    assert res.exit_code == 3
    assert res.stderr == "error: a.csv: cannot read it: second line\n"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (FileNotFoundError(2, "No such file or directory", "x/y.csv"), "x/y.csv: file not found"),
        (PermissionError(13, "Permission denied", "/root/out.csv"), "/root/out.csv: permission denied"),
        (FileReadError("img.png", "not an image"), "img.png: not an image"),
        (ValueError("bad value\n  with a traceback-like tail\n  more"), "bad value"),
        (pickle.UnpicklingError("invalid load key, 'x'."), "UnpicklingError: invalid load key, 'x'."),
        (OSError(28, "No space left on device", "big.bin"), "big.bin: No space left on device"),
    ],
)
def test_describe_maps_exceptions_to_one_line(exc: BaseException, expected: str) -> None:
    assert describe(exc) == expected


def test_decorator_maps_user_errors_and_keeps_bugs() -> None:
    @one_line_errors
    def func() -> None:
        raise FileNotFoundError(2, "No such file or directory", "gt.csv")

    res = _run(func)
    assert res.exit_code == EXIT_ERROR and res.stderr == "error: gt.csv: file not found\n"

    @one_line_errors
    def func() -> None:  # noqa: F811 - a programming error keeps its traceback
        raise TypeError("bug")

    res = _run(func)
    assert isinstance(res.exception, TypeError)


def test_context_manager_prefix_and_cli_error_code() -> None:
    def func() -> None:
        with one_line_errors(context="cannot load the model", code=2):
            raise ValueError("w.safetensors: file is empty")

    res = _run(func)
    assert res.exit_code == 2
    assert res.stderr == "error: cannot load the model: w.safetensors: file is empty\n"

    @one_line_errors
    def func() -> None:  # noqa: F811
        raise CliError("x: nope", code=7)

    assert _run(func).exit_code == 7


def test_safetensors_errors_are_one_line() -> None:
    from safetensors import SafetensorError

    @one_line_errors
    def func() -> None:
        raise SafetensorError("Error while deserializing header: HeaderTooSmall")

    res = _run(func)
    assert res.exit_code == EXIT_ERROR and res.stderr.count("\n") == 1


def test_check_output_file(tmp_path: Path) -> None:
    assert check_output_file(tmp_path / "new" / "deeper" / "out.csv") == tmp_path / "new" / "deeper" / "out.csv"
    assert not (tmp_path / "new").exists()  # the check creates nothing
    with pytest.raises(CliError, match="is a folder"):
        check_output_file(tmp_path, "-o")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(CliError, match=r"-o .*file.txt/out.csv: cannot write there: .*is a file"):
        check_output_file(blocker / "out.csv", "-o")
    assert list(tmp_path.iterdir()) == [blocker]  # no probe file left behind


def test_check_output_file_on_read_only_place() -> None:
    ro = Path("/proc/acfd-test-out.csv")
    if not Path("/proc").is_dir():
        pytest.skip("no /proc")
    with pytest.raises(CliError, match="cannot write in /proc"):
        check_output_file(ro, "--json")


def test_check_output_dir(tmp_path: Path) -> None:
    check_output_dir(tmp_path / "plots")
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(CliError, match="is a file, not a folder"):
        check_output_dir(f, "--out")


def test_check_not_inputs(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    a.write_text("x")
    check_not_inputs(tmp_path / "b.csv", [a])
    with pytest.raises(CliError, match="would overwrite the input"):
        check_not_inputs(tmp_path / "." / "a.csv", [a], "-o")


def test_check_device() -> None:
    assert str(check_device("cpu")) == "cpu"
    with pytest.raises(CliError, match="unknown device"):
        check_device("foo")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(CliError, match="no CUDA GPU"):
            check_device("cuda")
