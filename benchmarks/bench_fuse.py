"""Network time of unfused vs fused (ACB + conv/BN re-parameterisation, paper 4.3) on the CPU.

Usage::

    .venv/bin/python benchmarks/bench_fuse.py                    # acfd-l and acfd-s, 640x640, batch 1
    .venv/bin/python benchmarks/bench_fuse.py --models acfd-l --runs 20 --threads 2

Both forms of a model are timed in alternating order, run after run, so a change in the
machine's load during the benchmark hits both alike; the median (and quartiles) of the runs is
reported, with the largest output difference between the two forms.
"""

from __future__ import annotations

import logging
import os
import statistics
import time

import torch
import typer

from acfd.deploy.fuse import count_asymmetric_convs, count_batchnorm, fuse_model
from acfd.models import create_model

logger = logging.getLogger(__name__)


def _time_once(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return 1000.0 * (time.perf_counter() - start)


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


@torch.inference_mode()
def bench_model(name: str, size: tuple[int, int], runs: int, warmup: int) -> dict[str, float]:
    """Median ms per forward pass of ``name`` unfused and fused (batch 1, random weights).

    Args:
        name: a registered model name.
        size: ``(height, width)`` of the input.
        runs: timed runs of each form.
        warmup: untimed runs of each form first.
    """
    torch.manual_seed(0)
    model = create_model(name).eval()
    fused = fuse_model(model)
    x = torch.randn(1, 3, *size)
    diff = max(float((a - b).abs().max()) for a, b in zip(model(x), fused(x)))
    for _ in range(warmup):
        model(x)
        fused(x)
    times: dict[str, list[float]] = {"unfused": [], "fused": []}
    for i in range(runs):
        order = ("unfused", "fused") if i % 2 == 0 else ("fused", "unfused")
        for form in order:
            times[form].append(_time_once(model if form == "unfused" else fused, x))
    u, f = _quartiles(times["unfused"]), _quartiles(times["fused"])
    return {
        "unfused_q1": u[0], "unfused_ms": u[1], "unfused_q3": u[2],
        "fused_q1": f[0], "fused_ms": f[1], "fused_q3": f[2],
        "speedup": u[1] / f[1],
        "saved_ms": u[1] - f[1],
        "max_abs_diff": diff,
        "bn_before": count_batchnorm(model), "bn_after": count_batchnorm(fused),
        "asym_before": count_asymmetric_convs(model), "asym_after": count_asymmetric_convs(fused),
    }


def main(
    models: str = typer.Option("acfd-l,acfd-s", "--models", help="Comma list of model names."),
    size: int = typer.Option(640, "--size", help="Square input side."),
    runs: int = typer.Option(15, "--runs", min=1, help="Timed runs of each form (median)."),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed runs of each form."),
    threads: int = typer.Option(
        os.cpu_count() or 1, "--threads", min=1, help="torch.set_num_threads (default: all cores)."
    ),
) -> None:
    """Print unfused vs fused ms per forward pass (CPU, batch 1)."""
    torch.set_num_threads(threads)
    typer.echo(
        f"torch {torch.__version__}, CPU, {threads} threads, input 1x3x{size}x{size}, "
        f"median of {runs} runs after {warmup} warm-up (interleaved)"
    )
    header = f"{'model':<8} {'unfused ms':>18} {'fused ms':>18} {'speedup':>8} {'saved ms':>9} {'max|diff|':>9}  BN / 1xK convs"
    typer.echo(header)
    typer.echo("-" * len(header))
    for name in [m.strip() for m in models.split(",") if m.strip()]:
        r = bench_model(name, (size, size), runs, warmup)
        typer.echo(
            f"{name:<8} {r['unfused_ms']:>8.1f} [{r['unfused_q1']:.0f}-{r['unfused_q3']:.0f}]"
            f" {r['fused_ms']:>8.1f} [{r['fused_q1']:.0f}-{r['fused_q3']:.0f}]"
            f" {r['speedup']:>7.2f}x {r['saved_ms']:>9.1f} {r['max_abs_diff']:>9.1e}"
            f"  {r['bn_before']}->{r['bn_after']} / {r['asym_before']}->{r['asym_after']}"
        )


if __name__ == "__main__":
    typer.run(main)
