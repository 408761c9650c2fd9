"""``acfd widen``: grow trained weights into a wider variant that starts with the same outputs.

For continuing a CPU training run with more capacity (docs/MODEL_CARD.md, "acfd-nw"): the neck and
head of ``WEIGHTS`` are widened to those of ``--to`` (``acfd.models.widen``); the backbone and all
other settings (head normalisation, matching, ...) stay as trained. The command checks on a random
image that the new model's outputs equal the old one's before it writes anything.
"""

from __future__ import annotations

from pathlib import Path

import typer

from acfd.cli.errors import check_not_inputs, check_output_file, fail, one_line_errors


def register(app: typer.Typer) -> None:
    @app.command("widen")
    @one_line_errors
    def widen(
        weights: Path = typer.Argument(..., help="Trained weights (.safetensors or checkpoint) of the small model."),
        to: str = typer.Option(..., "--to", help="The wider variant whose neck / head widths to take (e.g. acfd-nw)."),
        output: Path = typer.Option(..., "--output", "-o", help="Where to write the widened .safetensors."),
        seed: int = typer.Option(0, help="Seed of the channel mapping and of the weight shares."),
    ) -> None:
        """Widen a trained detector's neck and head to another variant's, keeping its outputs."""
        import dataclasses

        import torch

        from acfd.models.registry import get_model_config
        from acfd.predict.modelfile import load_model, save_weights
        from acfd.models.widen import widen_model

        check_output_file(output)
        check_not_inputs(output, [weights])
        target = get_model_config(to)
        small = load_model(weights)
        if target.backbone != small.cfg.backbone:
            fail(f"{weights}: {small.cfg.name} has another backbone than {to}; only the neck and head can widen")
        # Beyond the widths, the neck and head must have the same structure (the trained settings
        # such as the head's normalisation are kept from the weights, as model_overrides set them).
        same = {"channels": 0, "norm": "", "norm_groups": 0}
        if (dataclasses.replace(target.neck, channels=0) != dataclasses.replace(small.cfg.neck, channels=0)
                or dataclasses.replace(target.head, **same) != dataclasses.replace(small.cfg.head, **same)):
            fail(f"{weights}: {small.cfg.name}'s neck / head differ from {to}'s in more than their widths")
        try:
            wide = widen_model(small, target.neck.channels, target.head.channels, name=to).eval()
        except ValueError as exc:
            fail(f"{weights}: {exc}")
        x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            diff = max(float((a - b).abs().max()) for a, b in zip(small(x), wide(x)))
        if diff > 1e-3:  # the rule is exact up to float rounding; anything more is a bug
            fail(f"{weights}: the widened model's outputs differ by {diff:.2g}; nothing written")
        save_weights(wide, output, extra={"widened_from": str(weights)})
        typer.echo(
            f"{output}: {to} (neck {small.cfg.neck.channels} -> {target.neck.channels}, head "
            f"{small.cfg.head.channels} -> {target.head.channels} channels), outputs equal to {weights}'s "
            f"(max difference {diff:.1e})"
        )
