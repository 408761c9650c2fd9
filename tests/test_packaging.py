"""The package as installed: the core install detects faces without the optional extras, a command
that needs a missing extra says in one line what to install, and pyproject.toml's package data and
extras match the tree and the code."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from acfd.cli.errors import EXTRA_MODULES, extra_of, missing_extra

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SAMPLE = ROOT / "samples" / "personai_icartoonface_dettrain_00330.jpg"
OPTIONAL = sorted({m for modules in EXTRA_MODULES.values() for m in modules})

# Runs ``acfd ARGS...`` as if the modules in argv[1] (comma-separated) were not installed.
_WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # "import name" now raises ModuleNotFoundError
sys.argv = ["acfd", *sys.argv[2:]]
from acfd.cli import main
main()
"""


def _acfd_without(modules: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _WITHOUT, ",".join(modules), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_package_data_matches_the_tree() -> None:
    package = ROOT / "src" / "acfd"
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["acfd"]
    for pattern in patterns:
        assert list(package.glob(pattern)), f"package-data {pattern!r} matches no file"
    data_files = [p for p in package.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
                  and "__pycache__" not in p.parts]
    assert data_files
    unlisted = [p for p in data_files if not any(p.match(str(package / pat)) for pat in patterns)]
    assert not unlisted, f"files the wheel would leave out: {unlisted}"


def test_core_dependencies_leave_the_extras_out() -> None:
    core = PYPROJECT["project"]["dependencies"]
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {req.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for req in core}
    assert {"torch", "torchvision", "onnxruntime"} <= names
    assert not names & {"fastapi", "uvicorn", "faiss-cpu", "scikit-learn", "ray"}
    torch_req = next(r for r in core if r.startswith("torch>") or r.startswith("torch="))
    assert "==" not in torch_req and "<" in torch_req, "torch as a compatible range"
    assert set(EXTRA_MODULES) <= set(extras), "every extra the CLI names is in pyproject.toml"
    dev_self = next(r for r in extras["dev"] if r.startswith("acfd["))
    assert set(EXTRA_MODULES) <= set(dev_self[len("acfd["):-1].split(",")), "dev installs every extra"


def test_extra_of_names_the_extra_of_a_missing_module() -> None:
    assert extra_of(ModuleNotFoundError("x", name="fastapi.responses")) == "serve"
    assert extra_of(ModuleNotFoundError("x", name="faiss")) == "recognition"
    assert extra_of(ModuleNotFoundError("x", name="sklearn.ensemble")) == "train"
    assert extra_of(ModuleNotFoundError("x", name="ray")) == "ray"
    assert extra_of(ModuleNotFoundError("x", name="numpy")) is None
    assert missing_extra("acfd serve", "serve") == "acfd serve needs the 'serve' extra: pip install 'acfd[serve]'"


@pytest.mark.slow
def test_detect_runs_without_any_extra(tmp_path: Path) -> None:
    result = _acfd_without(OPTIONAL, "detect", str(SAMPLE), "--save-images", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 faces" in result.stdout
    assert (tmp_path / "out" / SAMPLE.name).stat().st_size > 0


@pytest.mark.parametrize(("args", "extra"), [
    (["serve"], "serve"),
    (["gallery", "add", "gura", str(SAMPLE), "--gallery", "chars.gallery"], "recognition"),
    (["calibrate", str(ROOT / "src" / "acfd" / "weights" / "acfd-n.safetensors"), "--gt",
      str(ROOT / "samples" / "annotations.csv"), "--images", str(ROOT / "samples"), "-o", "out.safetensors"], "train"),
    (["detect", str(SAMPLE), "--engine", "ray"], "ray"),
])
def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path, args: list[str], extra: str) -> None:
    result = _acfd_without(OPTIONAL, *args, cwd=tmp_path)
    assert result.returncode == 1
    line = f"error: acfd {args[0]} needs the '{extra}' extra: pip install 'acfd[{extra}]'"
    assert result.stderr.strip().splitlines() == [line]
    assert not list(tmp_path.iterdir()), "nothing written"
