"""``acfd train``: run a training recipe (YAML) with ``key=value`` overrides."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command(
        "train", context_settings={"allow_extra_args": True, "ignore_unknown_options": False}
    )
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
        from acfd.engine.train import load_train_config, train

        items = list(overrides or [])
        if output:
            items.append(f"output={output}")
        if device:
            items.append(f"device={device}")
        try:
            cfg = load_train_config(config, items)
        except (ValueError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        last = train(cfg, resume=resume)
        if last is not None:
            typer.echo(f"checkpoint: {last}")
