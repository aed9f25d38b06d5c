"""What training minimises and how fast: cross-entropy on every time step plus a CCC loss for valence/arousal, and
the learning-rate factor of linear warm-up then cosine decay."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from emotion.training.config import TrainConfig


def ccc_loss(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """1 - concordance correlation coefficient over all given values (1-D tensors of equal length >= 2)."""
    pm, tm = pred.mean(), true.mean()
    cov = ((pred - pm) * (true - tm)).mean()
    return 1 - 2 * cov / (pred.var(unbiased=False) + true.var(unbiased=False) + (pm - tm) ** 2 + 1e-8)


def compute_loss(
    out: dict[str, torch.Tensor], label: torch.Tensor, va: torch.Tensor, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy on every time step of clips with a category, CCC loss for valence and arousal over every
    annotated frame of the batch; each output also enters with weight 0 so DDP always sees every parameter used.

    An architecture's extra training outputs (emotion.model.clip.OUTPUT_KEYS) add: `aux_logits`, intermediate
    predictions trained with the clip's category too (their mean cross-entropy times `aux_weight`, part 'aux_ce'),
    and `aux_loss`, a label-free loss such as a reconstruction, already weighted (part 'aux')."""
    logits = out["logits"].float()
    t, c = logits.shape[1:]
    pred_va = torch.stack([out["valence"], out["arousal"]], dim=-1).float()
    loss = 0.0 * (logits.sum() + pred_va.sum() + sum(a.float().sum() for a in out.get("aux_logits", ())))
    parts: dict[str, float] = {}
    has_label = label >= 0
    if has_label.any():
        targets = label[has_label, None].expand(-1, t).reshape(-1)
        ce = F.cross_entropy(logits[has_label].reshape(-1, c), targets, label_smoothing=config.label_smoothing)
        loss = loss + config.class_weight * ce
        parts["ce"] = float(ce.detach())
        aux = [
            F.cross_entropy(
                a[has_label].float().flatten(0, 1), label[has_label, None].expand(-1, a.shape[1]).reshape(-1)
            )
            for a in out.get("aux_logits", ())
        ]
        if aux:
            aux_ce = torch.stack(aux).mean()
            loss = loss + config.class_weight * out["aux_weight"] * aux_ce
            parts["aux_ce"] = float(aux_ce.detach())
    va_losses = []
    for d, name in enumerate(("valence", "arousal")):
        valid = ~torch.isnan(va[..., d])
        if int(valid.sum()) >= 2:
            term = ccc_loss(pred_va[..., d][valid], va[..., d][valid])
            va_losses.append(term)
            parts[f"ccc_{name}"] = float(term.detach())
    if va_losses:
        loss = loss + config.va_weight * torch.stack(va_losses).mean()
    if "aux_loss" in out:
        loss = loss + out["aux_loss"].float()
        parts["aux"] = float(out["aux_loss"].detach())
    parts["loss"] = float(loss.detach())
    return loss, parts


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over warmup_steps, then cosine decay to min_ratio at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
