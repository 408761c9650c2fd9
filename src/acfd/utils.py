"""Small shared helpers: atomic file writes, file digests, the cache folder and the package version."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    Whatever was at ``path`` before stays intact when writing fails half-way.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the result the usual permissions (0666 minus the umask)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_sha256(module: Any) -> str:
    """The SHA-256 (hex) of a ``torch.nn.Module``'s state dict: names and tensor bytes, in order."""
    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_dir() -> Path:
    """Where acfd caches what it can rebuild (ONNX exports, model facts): ``$ACFD_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/acfd``, else ``~/.cache/acfd``."""
    env = os.environ.get("ACFD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "acfd"


def package_version() -> str:
    """The installed acfd version (``"unknown"`` for a source checkout that is not installed); part of
    every cache key, so a new release rebuilds its caches."""
    try:
        return importlib.metadata.version("acfd")
    except importlib.metadata.PackageNotFoundError:  # a source checkout on sys.path, not installed
        return "unknown"


class FileReadError(ValueError):
    """A file could not be read; ``str(err)`` is ``"<path>: <reason>"``.

    Args:
        path: the file that failed.
        reason: what went wrong, in a few words.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Keeps the (path, reason) signature picklable (DataLoader workers send errors back).
        return (self.__class__, (self.path, self.reason))


def default_threads() -> int:
    """Threads for inference: the cores this process may run on (``os.sched_getaffinity``: a
    container's or ``taskset``'s limit, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def ort_session_options(num_threads: int | None = None) -> Any:
    """ONNX Runtime session options of every acfd network: full graph optimisation, errors only in
    the log (float16 graphs warn about constant folding), ``num_threads`` intra-op threads (``None``:
    one per core) and one inter-op thread, and no spinning: ONNX Runtime's idle workers otherwise
    spin after each run and take the cores from the post-processing and the other network that
    follow (and from other jobs on a shared machine).

    Raises:
        ValueError: ``num_threads`` below 1.
    """
    import onnxruntime as ort  # optional: PyTorch runs the networks without it

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if num_threads is not None:
        if int(num_threads) < 1:
            raise ValueError(f"threads must be >= 1, got {num_threads}")
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    return options


def resolve_device(device: object) -> torch.device:  # noqa: F821 - torch is imported lazily
    """A ``torch.device`` that exists on this machine, or a one-line ``ValueError``.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a ``torch.device``.

    Raises:
        ValueError: an unknown device name, or CUDA / MPS (or that CUDA index) not available here.
    """
    import torch  # here, not at the top: the command line uses this module before it loads torch

    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{device!r}: unknown device (use cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{device!r}: no CUDA GPU is available here (use cpu)")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{device!r}: there {'is' if count == 1 else 'are'} only {count} CUDA GPU(s)")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{device!r}: MPS is not available here (use cpu)")
    elif dev.type != "cpu":
        raise ValueError(f"{device!r}: unsupported device type {dev.type!r} (use cpu, cuda or mps)")
    return dev
