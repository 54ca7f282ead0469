"""Ways to keep what a pretrained source encoder knew while continued pretraining teaches it new tasks.

Three methods, each off by default (``preserve`` section of the run config, :class:`PreserveConfig`):

- **head warm-up** (linear-probe-then-fine-tune, Kumar et al. 2022): for the first ``head_warmup_steps``
  steps of each task, the encoder learns at ``head_warmup_encoder_lr`` times its rate while the new, random
  head learns at the full rate, so the head's first large, noisy gradients do not reach the encoder;
- **anchoring** (L2-SP, Li et al. 2018): ``l2sp_weight * ||theta - theta_source||^2`` over the encoder's
  weights, soft parameter sharing with the source. Its gradient ``2 * l2sp_weight * (theta - theta_source)``
  enters the backward pass directly (:class:`AnchorGradient`): autograd need not carry the norm, and the
  gradient is the one the penalty in the loss would give, clipped and reduced with the task's;
- **distillation** from the frozen source: ``distill_weight`` times a distance between the current and the
  source encoder's states on the same batch (``distill_on``: cosine distance of the mean-pooled states, or
  the mean squared error of the last layer's token states).

The fourth, **replay** (``replay_corpus``, ``replay_fraction``), changes the data, not the model: a second
corpus's masked-LM examples join the run's own when they are built (:mod:`ernie_cmtl.build.replay`).

Everything here is a pure function of (source weights, current weights, batch, plan, step): nothing is
random and nothing is saved, so a resumed run continues bit-identically. The task embeddings are new in a
continued run (they start at zero), so they are neither anchored nor part of the source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from ernie_cmtl.config import ModelConfig, PreserveConfig
from ernie_cmtl.model import Encoder
from ernie_cmtl.retention import mean_pool
from ernie_cmtl.scheduler import Plan

TASK_EMBEDDING_PREFIX = "embeddings.task"


def anchor_penalty(params: list[Tensor], sources: list[Tensor]) -> Tensor:
    """``sum ||p - s||^2`` over the pairs, in fp32 (one fused pass per list: foreach ops)."""
    differences = torch._foreach_sub([p.float() for p in params], [s.float() for s in sources])
    norms = torch._foreach_norm(differences)
    return torch.stack(norms).pow(2).sum()


class AnchorGradient(torch.autograd.Function):
    """``AnchorGradient.apply(weight, sources, *params)``: a zero-valued loss term whose gradient is that of
    ``weight * anchor_penalty(params, sources)``, i.e. ``2 * weight * (p - s)`` for each parameter.

    The penalty in the loss costs a subtraction, a norm and their backward over every anchored weight
    (measured: 10.6% of a MiniLM step on CPU); this costs one subtraction and one scaling in backward. The
    gradient still reaches the parameters through autograd, so each engine (DeepSpeed's reduction hooks, loss
    scaling, accumulation, clipping) treats it like any other loss term's."""

    @staticmethod
    def forward(ctx, weight: float, sources: list[Tensor], *params: Tensor) -> Tensor:
        ctx.weight, ctx.sources = weight, sources
        ctx.save_for_backward(*params)
        return torch.zeros((), device=params[0].device)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        params = ctx.saved_tensors
        same = all(p.dtype == s.dtype for p, s in zip(params, ctx.sources, strict=True))
        diffs = torch._foreach_sub(list(params) if same else [p.float() for p in params], ctx.sources)
        torch._foreach_mul_(diffs, 2.0 * ctx.weight * grad.float())
        if not same:
            diffs = [d.to(p.dtype) for d, p in zip(diffs, params, strict=True)]
        return (None, None, *diffs)


def distillation_loss(current: Tensor, source: Tensor, attention_mask: Tensor,
                      on: Literal["mean", "tokens"] = "mean") -> Tensor:
    """Distance between the current and the source encoder's [B, L, H] states on the same batch: 0 where
    they agree. ``mean``: 1 - cosine of the mean-pooled states, averaged over the batch; ``tokens``: mean
    squared error over the real tokens' states (per hidden unit)."""
    current, source = current.float(), source.float()
    if on == "mean":
        cosine = nn.functional.cosine_similarity(mean_pool(current, attention_mask),
                                                 mean_pool(source, attention_mask), dim=-1)
        return (1.0 - cosine).mean()
    real = attention_mask.bool()
    return nn.functional.mse_loss(current[real], source[real])


def head_warmup_steps(task_at: Callable[[int], str], total_steps: int, warmup: int) -> frozenset[int]:
    """The steps that are among the first ``warmup`` steps of their task (the head is new there): a pure
    function of the plan (``task_at``), so a resumed run sees the same set."""
    if warmup <= 0:
        return frozenset()
    seen: dict[str, int] = {}
    steps = []
    for step in range(total_steps):
        task = task_at(step)
        count = seen.get(task, 0)
        if count < warmup:
            steps.append(step)
        seen[task] = count + 1
    return frozenset(steps)


def encoder_lr_scale(plan: Plan, config: PreserveConfig) -> Callable[[int], float] | None:
    """The encoder's learning-rate factor of step s under head warm-up (``head_warmup_encoder_lr`` on the
    first ``head_warmup_steps`` steps of every task, 1 elsewhere), or None when head warm-up is off."""
    steps = head_warmup_steps(plan.task_at, plan.total_steps, config.head_warmup_steps)
    if not steps:
        return None
    factor = config.head_warmup_encoder_lr

    def scale(step: int) -> float:
        return factor if step in steps else 1.0

    return scale


def source_encoder(model_config: ModelConfig) -> Encoder:
    """The ``model.init_from`` encoder exactly as a new run starts from it (task embeddings as the run
    initializes them), read from the source directory: the same in a resumed run, whatever the checkpoint
    holds. Built on the meta device first, so no random numbers are drawn."""
    from ernie_cmtl.hf import load_hf_model

    if model_config.init_from is None:
        raise ValueError("source_encoder: model.init_from is not set")
    with torch.device("meta"):
        source = Encoder(model_config)
    hf = load_hf_model(model_config.init_from)
    source.load_state_dict(hf.encoder_state_for(model_config.num_task_embeddings), assign=True)
    return source


class SourceAnchor:
    """The frozen source encoder (:func:`source_encoder`) beside the trained one, and the extra loss of
    anchoring and distillation for one batch.

    ``extra_loss`` reads the current encoder's states through a forward hook on ``encoder`` (the engine's
    forward runs the model as usual) and runs the source on the same batch without gradient."""

    def __init__(self, encoder: nn.Module, source: nn.Module, config: PreserveConfig) -> None:
        self.config = config
        self.encoder = encoder
        self.source = source.eval().requires_grad_(False)
        pairs = [(p, s) for (name, p), (_, s) in zip(encoder.named_parameters(), self.source.named_parameters(),
                                                      strict=True)
                 if p.requires_grad and not name.startswith(TASK_EMBEDDING_PREFIX)]
        self.params = [p for p, _ in pairs]
        self.sources = [s for _, s in pairs]
        self._states: Tensor | None = None
        self._distill: Tensor | None = None
        self._hook = encoder.register_forward_hook(self._keep_states) if config.distill_weight > 0 else None

    def _keep_states(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        self._states = output

    def to(self, device: torch.device) -> SourceAnchor:
        self.source.to(device)
        return self

    def extra_loss(self, batch: dict[str, Tensor]) -> Tensor | None:
        """The term to add to the batch's loss for anchoring and distillation (None: both off). Its value is
        the distillation term's (anchoring adds a gradient, not a value: :meth:`terms` has the penalty)."""
        cfg = self.config
        loss: Tensor | None = None
        if cfg.l2sp_weight > 0:
            loss = AnchorGradient.apply(cfg.l2sp_weight, self.sources, *self.params)
        if cfg.distill_weight > 0:
            current, self._states = self._states, None
            if current is None:
                raise RuntimeError("distillation: the encoder did not run on this batch")
            with torch.no_grad():
                source = self.source(batch["input_ids"], batch.get("attention_mask"), batch.get("segment_ids"),
                                     batch.get("task_ids"))
            mask = batch.get("attention_mask")
            if mask is None:
                mask = torch.ones(batch["input_ids"].shape, device=current.device)
            term = cfg.distill_weight * distillation_loss(current, source, mask, cfg.distill_on)
            self._distill = term.detach()
            loss = term if loss is None else loss + term
        return loss

    def terms(self) -> dict[str, Tensor]:
        """What the trainer logs, weighted: ``l2sp``, the penalty at the current weights (computed here, only
        when asked: the training step needs its gradient, not its value); ``distill``, the last batch's."""
        out = {}
        if self.config.l2sp_weight > 0:
            with torch.no_grad():
                out["l2sp"] = self.config.l2sp_weight * anchor_penalty(self.params, self.sources)
        if self._distill is not None:
            out["distill"] = self._distill
        return out

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
