"""``acfd models``: the registered variants with their size and cost."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models(
        size: int = typer.Option(640, help="Square input side for the GFLOPs column."),
        fused: bool = typer.Option(True, help="Report the deployed (ACB/BN-fused) model."),
        names: list[str] = typer.Argument(None, help="Variants to show (default: all)."),
    ) -> None:
        """List model variants: parameters, size in MB (fp32) and GFLOPs."""
        from acfd.deploy.fuse import fuse_model
        from acfd.models.registry import (
            count_gflops,
            count_parameters,
            create_model,
            get_model_config,
            list_models,
            model_size_mb,
        )

        chosen = names or list_models()
        typer.echo(f"{'model':<22}{'backbone':<18}{'neck':<8}{'params(M)':>10}{'MB':>9}{'GFLOPs@' + str(size):>13}")
        for name in chosen:
            try:
                cfg = get_model_config(name)
            except ValueError as exc:
                typer.echo(str(exc), err=True)
                raise typer.Exit(2) from exc
            model = create_model(name)
            if fused:
                model = fuse_model(model, inplace=True)
            backbone = "vovnetv3" if cfg.backbone.name == "vovnet" and cfg.backbone.asymmetric else (
                "vovnetv2" if cfg.backbone.name == "vovnet" else cfg.backbone.name)
            typer.echo(
                f"{name:<22}{backbone:<18}{cfg.neck.name:<8}{count_parameters(model) / 1e6:>10.2f}"
                f"{model_size_mb(model):>9.1f}{count_gflops(model, size, size):>13.2f}"
            )
