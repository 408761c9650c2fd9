"""Grow a trained detector into a wider variant without changing what it computes (Net2WiderNet).

A CPU training budget runs out long before a larger variant trained from scratch catches up with a
trained small one. Widening the trained model's neck and head (Chen et al., "Net2Net", ICLR 2016,
section 3.1) gives the larger variant the small one's exact function as its start, so training goes
on from the small model's accuracy with more capacity. No library does this for an arbitrary
PyTorch model, and the rule needs to know this architecture (which widths may change, which
normalisations are per channel), hence this file.

The rule, for every tensor under ``neck.`` and ``head.`` (the backbone is copied as it is):
- a dimension whose size changes from ``c`` to ``c'`` is a channel dimension of width ``c``; new
  channel ``j`` copies old channel ``mapping[j]`` (one mapping per ``(c, c')`` pair, shared by every
  tensor, so the fused neck features stay aligned across levels and cells);
- on the input side of a convolution (dimension 1), each copy gets a random share of the old weight
  and the shares of one old channel sum to 1: the sum is unchanged (exact function), and the uneven
  split breaks the symmetry between copies so they can learn different things.
BatchNorm is per channel, so any mapping is exact. GroupNorm statistics are exact only when every
group keeps the same old channels, so GroupNorm widths must grow by an integer factor, with the
copies of a channel placed next to each other (``mapping[j] = j // k``).
"""

from __future__ import annotations

import dataclasses

import torch

from acfd.models.detector import ACFD

_WIDENED_PREFIXES = ("neck.", "head.")


def channel_mapping(old: int, new: int, generator: torch.Generator) -> torch.Tensor:
    """Old channel copied by each of ``new`` channels: ``j // k`` for ``new = k * old`` (keeps
    GroupNorm groups), else the old channels in order followed by random picks (Net2Net)."""
    if new < old:
        raise ValueError(f"cannot widen {old} channels to fewer ({new})")
    if new % old == 0:
        return torch.arange(new) // (new // old)
    extra = torch.randint(0, old, (new - old,), generator=generator)
    return torch.cat([torch.arange(old), extra])


def _input_shares(mapping: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Random positive shares of each old input channel among its copies, summing to 1 per copy group.

    Shape ``shape`` (out, new_in, ...): one share per weight element, so every output channel splits
    its weight differently.
    """
    raw = 0.5 + torch.rand(shape, generator=generator)  # U(0.5, 1.5): no copy gets (almost) nothing
    totals = torch.zeros(shape[0], int(mapping.max()) + 1, *shape[2:])
    totals.index_add_(1, mapping, raw)
    return raw / totals.index_select(1, mapping)


def widen_state_dict(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], seed: int = 0
) -> dict[str, torch.Tensor]:
    """Map ``state`` (the small model) onto the shapes of ``target`` (the wide model's state dict).

    Raises:
        ValueError: the two differ in tensor names, or outside the neck and head, or a dimension
            shrinks.
    """
    if set(state) != set(target):
        missing, unexpected = set(target) - set(state), set(state) - set(target)
        raise ValueError(f"the models differ in more than width ({len(missing)} missing, {len(unexpected)} extra tensors)")
    generator = torch.Generator().manual_seed(seed)
    mappings: dict[tuple[int, int], torch.Tensor] = {}

    def mapping_for(old: int, new: int) -> torch.Tensor:
        if (old, new) not in mappings:
            mappings[(old, new)] = channel_mapping(old, new, generator)
        return mappings[(old, new)]

    out: dict[str, torch.Tensor] = {}
    for name, old in state.items():
        new_shape = tuple(target[name].shape)
        value = old.detach().float() if old.is_floating_point() else old.detach()
        if tuple(value.shape) == new_shape:
            out[name] = value.to(target[name].dtype).clone()
            continue
        if not name.startswith(_WIDENED_PREFIXES) or value.dim() != len(new_shape):
            raise ValueError(f"{name}: shape {tuple(value.shape)} cannot become {new_shape} (only the neck and head widen)")
        if value.shape[0] != new_shape[0]:  # output channels (or a per-channel norm / bias vector)
            value = value.index_select(0, mapping_for(value.shape[0], new_shape[0]))
        if value.dim() == 4 and value.shape[1] != new_shape[1]:  # a convolution's input channels
            mapping = mapping_for(value.shape[1], new_shape[1])
            value = value.index_select(1, mapping)
            value = value * _input_shares(mapping, tuple(value.shape), generator)
        if tuple(value.shape) != new_shape:
            raise ValueError(f"{name}: shape {tuple(old.shape)} cannot become {new_shape}")
        out[name] = value.to(target[name].dtype)
    return out


def widen_model(model: ACFD, neck_channels: int, head_channels: int, name: str | None = None, seed: int = 0) -> ACFD:
    """A copy of ``model`` with a ``neck_channels``-wide neck and ``head_channels``-wide head that
    computes the same outputs (up to float rounding); the backbone and every other setting are kept.

    Args:
        model: a trained detector (not in deploy / fused form).
        neck_channels, head_channels: the new widths (>= the old ones; GroupNorm heads: a multiple).
        name: the variant name to record in the new config (e.g. ``"acfd-nw"``).
        seed: for the channel mapping and the weight shares.
    """
    cfg = model.cfg
    if cfg.head.norm == "gn" and head_channels % cfg.head.channels:
        raise ValueError(
            f"a GroupNorm head widens only by a whole factor: {cfg.head.channels} -> {head_channels} channels"
        )
    wide_cfg = dataclasses.replace(
        cfg,
        name=name or cfg.name,
        neck=dataclasses.replace(cfg.neck, channels=neck_channels),
        head=dataclasses.replace(cfg.head, channels=head_channels),
    )
    wide = ACFD(wide_cfg)
    state = widen_state_dict(model.state_dict(), wide.state_dict(), seed=seed)
    wide.load_state_dict(state)
    return wide.train(model.training)
