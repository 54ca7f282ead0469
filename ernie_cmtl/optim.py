"""AdamW and its learning-rate schedule, built from an :class:`~ernie_cmtl.config.OptimConfig`.

Both engines (:mod:`ernie_cmtl.engine`, :mod:`ernie_cmtl.ds_engine`) and the benchmarks' reference loops take
their optimizer and schedule from here, so every loop steps with the same AdamW and the same warm-up and decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from ernie_cmtl.config import OptimConfig


def lr_lambda(cfg: OptimConfig) -> Callable[[int], float]:
    """The learning-rate factor of step s (from 0): linear warmup, then linear / cosine decay to
    ``min_lr_ratio`` at ``total_steps`` (or constant)."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.decay == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
        shape = 1.0 - progress if cfg.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape

    return factor


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, LayerNorm weights and embeddings' biases (1-D parameters)."""
    seen, decay, no_decay = set(), [], []
    for param in model.parameters():
        if id(param) in seen or not param.requires_grad:
            continue
        seen.add(id(param))
        (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


AdamWImpl = Literal["auto", "fused", "foreach", "for-loop"]


def make_adamw(groups: list[dict[str, Any]], cfg: OptimConfig, impl: AdamWImpl = "auto"
               ) -> tuple[torch.optim.AdamW, str]:
    """AdamW over ``groups`` and the implementation it got. ``auto``: the fused kernel where torch has one
    for the parameters' device and dtype (CUDA, and CPU since torch 2.4), else the foreach one. Measured on
    this project's CPU, one BERT-base AdamW step: 477 ms for-loop (torch's CPU default), 199 ms foreach,
    52 ms fused (docs/PERFORMANCE.md); ``for-loop`` is what the engine used on CPU before."""
    kwargs = {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps}
    if impl == "fused" or (impl == "auto" and fused_adamw_supported(groups)):
        return torch.optim.AdamW(groups, **kwargs, fused=True), "fused"
    if impl == "for-loop":
        return torch.optim.AdamW(groups, **kwargs, foreach=False), "for-loop"
    return torch.optim.AdamW(groups, **kwargs, foreach=True), "foreach"


def fused_adamw_supported(groups: list[dict[str, Any]]) -> bool:
    """Whether torch has a fused AdamW kernel for every parameter (it only checks at the first step)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        devices = _get_fused_kernels_supported_devices()
    except ImportError:  # the helper is private: where it moved, claim only what every torch >= 2.4 has
        devices = ["cuda", "cpu"]
    return all(p.device.type in devices and torch.is_floating_point(p) for g in groups for p in g["params"])


def build_optimizer(model: nn.Module, cfg: OptimConfig, impl: AdamWImpl = "auto",
                    encoder_lr_scale: Callable[[int], float] | None = None
                    ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR, str]:
    """AdamW over ``model``'s trainable parameters (:func:`param_groups`), its warm-up and decay schedule
    (:func:`lr_lambda`), and the AdamW implementation it got (:func:`make_adamw`).

    ``encoder_lr_scale``: a factor of step s for the parameters of ``model.encoder`` (head warm-up,
    :mod:`ernie_cmtl.preserve`); the encoder's and the heads' parameters then form separate groups. A pure
    function of the step, so the schedule's saved position restores it exactly."""
    base = lr_lambda(cfg)
    if encoder_lr_scale is None:
        optimizer, got = make_adamw(param_groups(model, cfg.weight_decay), cfg, impl)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, base), got
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    encoder = param_groups(model.encoder, cfg.weight_decay)
    heads = [{**g, "params": [p for p in g["params"] if id(p) not in encoder_ids]}
             for g in param_groups(model, cfg.weight_decay)]
    optimizer, got = make_adamw(encoder + heads, cfg, impl)

    def scaled(step: int) -> float:
        return base(step) * encoder_lr_scale(step)

    lambdas = [scaled] * len(encoder) + [base] * len(heads)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas), got
