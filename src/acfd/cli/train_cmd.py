"""``acfd train``: run a training recipe (YAML) with ``key=value`` overrides.

Everything that can be checked is checked before the trainer is built (setting types and
ranges, the model name, the device, the data files, the checkpoint to resume, the run folder),
each problem as one ``error:`` line; a run folder that this command created is removed again
when the run fails before writing any checkpoint.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import typer

from acfd.cli.errors import CliError, check_device, check_output_dir, one_line_errors

_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),),
    "list": (list, tuple), "dict": (dict,),
}
#: Settings that must be at least this value.
_MINIMUM: dict[str, float] = {
    "epochs": 1, "batch_size": 2, "base_batch_size": 1, "input_size": 32, "workers": 0, "threads": 1, "log_every": 1,
    "save_every": 1, "eval_every": 0, "warmup_iters": 0, "max_iters": 1, "time_limit": 0,
}
_POSITIVE = ("base_lr", "warmup_start_lr")


def _allowed(annotation: str) -> tuple[type, ...]:
    kinds: tuple[type, ...] = ()
    for part in str(annotation).split("|"):
        kinds += _TYPES.get(part.strip().split("[")[0], ())
    return kinds


def check_settings(cfg: Any) -> None:
    """One-line ``CliError`` for a setting of the wrong type (``epochs=abc``) or out of range.

    Args:
        cfg: a :class:`acfd.engine.train.TrainConfig`.
    """
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kinds = _allowed(f.type)
        wrong_bool = isinstance(value, bool) and bool not in kinds
        if kinds and (not isinstance(value, kinds) or wrong_bool):
            raise CliError(f"setting {f.name}={value!r}: expected {f.type}")
        if f.name in _MINIMUM and value is not None and value < _MINIMUM[f.name]:
            raise CliError(f"setting {f.name}={value!r}: must be at least {_MINIMUM[f.name]:g}")
        if f.name in _POSITIVE and value <= 0:
            raise CliError(f"setting {f.name}={value!r}: must be positive")


def check_inputs(cfg: Any, resume: str | None) -> None:
    """The model name, device, data files and the checkpoint to resume, before any work.

    Args:
        cfg: a :class:`acfd.engine.train.TrainConfig`.
        resume: ``--resume`` (a file, ``auto`` or ``None``).
    """
    from acfd.models.registry import get_model_config  # run time: start-up stays light
    from acfd.predict.modelfile import read_model_config

    try:
        get_model_config(cfg.model)
    except ValueError as exc:
        raise CliError(f"setting model={cfg.model!r}: {exc}") from None
    if cfg.device != "auto":
        check_device(cfg.device)
    for key, kind in (("images", "folder"), ("annotations", "file"), ("train_split", "file"), ("val_split", "file")):
        path = getattr(cfg, key)
        if path is None:
            continue
        ok = Path(path).is_dir() if kind == "folder" else Path(path).is_file()
        if not ok:
            raise CliError(
                f"{path}: {key} {kind} not found (set {key}=PATH, or get the data: see README)"
            )
    if resume not in (None, "auto"):
        stored = read_model_config(Path(resume))  # one line naming the file when unreadable
        name = (stored or {}).get("name")
        if name and name != cfg.model:
            raise CliError(f"{resume}: this checkpoint trains {name}, not {cfg.model} (set model={name})")


def _has_checkpoint(folder: Path) -> bool:
    return any(p.suffix in (".pt", ".safetensors") for p in folder.rglob("*"))


def register(app: typer.Typer) -> None:
    @app.command(
        "train", context_settings={"allow_extra_args": True, "ignore_unknown_options": False}
    )
    @one_line_errors
    def train_command(
        overrides: list[str] = typer.Argument(
            None, help="Settings as key=value (e.g. epochs=50 batch_size=32 model=acfd-n)."
        ),
        config: Path = typer.Option(None, "--config", "-c", help="Training recipe (YAML)."),
        resume: str = typer.Option(None, "--resume", help="Checkpoint to continue, or 'auto'."),
        output: str = typer.Option(None, "--output", "-o", help="Run folder (overrides the config)."),
        device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: auto)."),
    ) -> None:
        """Train a detector (for several GPUs: torchrun --nproc_per_node N -m acfd.engine.train ...)."""
        from acfd.engine.train import load_train_config, train  # run time: start-up stays light

        items = list(overrides or [])
        if output:
            items.append(f"output={output}")
        if device:
            items.append(f"device={device}")
        try:
            cfg = load_train_config(config, items)
        except TypeError as exc:  # TrainConfig(**data) with a non-mapping value
            raise CliError(f"{config or 'settings'}: {exc}") from None
        check_settings(cfg)
        check_inputs(cfg, resume)
        run_dir = Path(cfg.output)
        check_output_dir(run_dir, "output")
        created = not run_dir.exists()
        try:
            last = train(cfg, resume=resume)
        except BaseException:
            if created and run_dir.is_dir() and not _has_checkpoint(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth keeping: leave no trace
            raise
        if last is not None:
            typer.echo(f"checkpoint: {last}")
