"""The architecture is enforced: import-linter's contracts in pyproject.toml (layers from the
command line down to config / utils, nothing but the entry points importing the command line, no
import cycle) hold for the package, imports inside functions included, and catch a break."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

REPO = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")


def _lint(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the repository's contracts on the ``acfd`` package under ``package_parent``."""
    if LINT is None:
        pytest.skip("lint-imports is not installed (pip install -e '.[dev]')")
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([LINT, "--config", str(REPO / "pyproject.toml"), "--no-cache"], cwd=package_parent,
                          capture_output=True, text=True, env=env, timeout=300)


def test_the_package_keeps_every_import_contract() -> None:
    result = _lint(REPO / "src")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module,line,broken",
    [
        ("predict/scales.py", "import acfd.cli.errors", "Only acfd.cli itself and acfd.__main__ import the command line"),
        ("models/registry.py", "def _late():\n    import acfd.predict.detector", "Layers from the command line"),  # inside a function
        ("predict/inputs.py", "from acfd.predict import detector", "No import cycle between modules"),
    ],
    ids=["library-imports-cli", "lower-layer-imports-higher", "cycle"],
)
def test_a_break_is_caught(tmp_path: Path, module: str, line: str, broken: str) -> None:
    for path in (REPO / "src" / "acfd").rglob("*.py"):
        target = tmp_path / "acfd" / path.relative_to(REPO / "src" / "acfd")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    (tmp_path / "acfd" / module).write_text((tmp_path / "acfd" / module).read_text() + f"\n\n{line}\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert any(broken in ln and "BROKEN" in ln for ln in result.stdout.splitlines()), result.stdout[-4000:]
