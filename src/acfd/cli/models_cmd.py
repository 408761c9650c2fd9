"""``acfd models``: the registered variants with their size and cost.

The figures come from the model's structure only, so each variant is built on PyTorch's ``meta``
device (no weight memory, no initialisation: 4-6x faster, same counts) and the results are kept
in ``<cache dir>/model_facts.json`` keyed by the variant's config, so later calls are instant.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import typer

from acfd.cli.errors import EXIT_USAGE, fail, one_line_errors
from acfd.config import config_to_dict
from acfd.utils import atomic_write_text, cache_dir, package_version

logger = logging.getLogger(__name__)

_CACHE_NAME = "model_facts.json"


def _cache_key(name: str, size: int, fused: bool) -> str:
    from acfd.models.registry import get_model_config  # loads torch: at run time, not at start-up

    cfg = json.dumps(config_to_dict(get_model_config(name)), sort_keys=True)
    digest = hashlib.sha256(cfg.encode()).hexdigest()[:16]
    return f"{name}|{digest}|{size}|{'fused' if fused else 'plain'}|{package_version()}"


def model_facts(name: str, size: int, fused: bool) -> dict[str, float]:
    """Parameters, fp32 MB and GFLOPs at ``size`` x ``size`` of a variant, computed on ``meta``."""
    import torch  # run time: start-up stays light
    from torch.utils.flop_counter import FlopCounterMode

    from acfd.deploy.fuse import fuse_model  # run time: start-up stays light
    from acfd.models.registry import count_parameters, create_model, model_size_mb

    with torch.device("meta"):
        model = create_model(name)
    if fused:
        model = fuse_model(model, inplace=True)
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size, device="meta"))
    return {
        "params": count_parameters(model),
        "mb": model_size_mb(model),
        "gflops": counter.get_total_flops() / 1e9,
    }


def _load_cache() -> tuple[Any, dict[str, dict[str, float]]]:
    path = cache_dir() / _CACHE_NAME
    try:
        data = json.loads(path.read_text())
        return path, data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return path, {}


def register(app: typer.Typer) -> None:
    @app.command("models")
    @one_line_errors
    def models(
        size: int = typer.Option(640, min=32, max=4096, help="Square input side for the GFLOPs column."),
        fused: bool = typer.Option(True, help="Report the deployed (ACB/BN-fused) model."),
        names: list[str] = typer.Argument(None, help="Variants to show (default: all)."),
    ) -> None:
        """List model variants: parameters, size in MB (fp32) and GFLOPs; "shipped" marks the variant
        whose trained weights come with acfd (the default model of acfd detect and Detector())."""
        from acfd.models.registry import get_model_config, list_models  # loads torch: at run time
        from acfd.predict.modelfile import shipped_weights

        chosen = names or list_models()
        for name in chosen:
            try:
                get_model_config(name)
            except ValueError as exc:
                fail(str(exc), EXIT_USAGE)
        cache_path, cache = _load_cache()
        changed = False
        typer.echo(f"{'model':<22}{'backbone':<18}{'neck':<8}{'params(M)':>10}{'MB':>9}{'GFLOPs@' + str(size):>13}"
                   "  weights")
        for name in chosen:
            cfg = get_model_config(name)
            key = _cache_key(name, size, fused)
            facts = cache.get(key)
            if facts is None:
                facts = cache[key] = model_facts(name, size, fused)
                changed = True
            backbone = "vovnetv3" if cfg.backbone.name == "vovnet" and cfg.backbone.asymmetric else (
                "vovnetv2" if cfg.backbone.name == "vovnet" else cfg.backbone.name)
            typer.echo(
                f"{name:<22}{backbone:<18}{cfg.neck.name:<8}{facts['params'] / 1e6:>10.2f}"
                f"{facts['mb']:>9.1f}{facts['gflops']:>13.2f}" + ("  shipped" if shipped_weights(name) else "")
            )
        if changed:
            try:
                atomic_write_text(cache_path, json.dumps(cache, indent=1, sort_keys=True) + "\n")
            except OSError as exc:  # a read-only home: the figures were printed, caching is optional
                logger.debug("cannot cache model facts in %s: %s", cache_path, exc)
