"""A thin LightningModule: optimisers, schedules, logging and fault checks around a model's ``loss(x)``.

In-memory training data live on the training device as one tensor and are batched by index (no per-step
host→device copies, no DataLoader workers). Data streamed from disk (a :class:`~wae.data.source.Source`) arrive as
``(indices, raw rows)`` batches read by DataLoader workers, uint8 for 8-bit images until they are on the device,
where they become float32. Under DDP the model's ``gather`` hook is an autograd-aware all-gather so that
batch-level divergences (MMD, the latent critic) see the global batch.
"""
from __future__ import annotations

import time

import lightning as L
import torch
from torch import Tensor

from ..config import TrainConfig
from ..data.source import Source
from ..errors import TrainingError
from ..models.base import AutoEncoderModel, identity_gather

__all__ = ["LitAutoEncoder", "all_gather_with_grad", "lr_multiplier"]


PRETRAIN_LR = 1e-3
"""Adam's learning rate in encoder pre-training (``train.pretrain_steps``)."""
CRITIC_BETAS = (0.5, 0.999)
"""Adam's betas for the latent critic of adversarial models (WAE-GAN, Tolstikhin et al.)."""


def all_gather_with_grad(t: Tensor) -> Tensor:
    """Concatenate ``t`` from every process along dim 0; gradients flow back to each process's own slice."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    if t.requires_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(t), dim=0)
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out, dim=0)


def lr_multiplier(epoch: int, milestones: list[int], factors: list[float]) -> float:
    """Piecewise-constant schedule: the factor of the last milestone reached (1.0 before the first)."""
    f = 1.0
    for m, fac in zip(milestones, factors):
        if epoch >= m:
            f = fac
    return f


class LitAutoEncoder(L.LightningModule):
    def __init__(self, model: AutoEncoderModel, cfg: TrainConfig, train_x: Tensor | Source | None = None):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.train_x = train_x
        self.source = train_x if isinstance(train_x, Source) else None
        """The training data when they are streamed from disk (batches then carry their rows)."""
        self.automatic_optimization = not model.has_critic
        self.pretrain_history: list[float] = []
        self.skip_pretrain = False
        """Set when the model starts from a state that was already pre-trained (a kept restart)."""
        self._t0 = time.time()
        self.targets: Tensor | None = None
        """(n,) a target cluster per training datum (−1: none) for ``pseudo_label_weight``: the restarts' consensus."""

    # --- setup ------------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.source is None and self.train_x is not None and self.train_x.device != self.device:
            self.train_x = self.train_x.to(self.device)
        if self.cfg.hardware.compile and not getattr(self.model, "_wae_compiled", False):
            # Compile each network in place (nn.Module.compile keeps parameter names, so checkpoints and the
            # safetensors export are unchanged); the objective's own tensor code stays eager.
            for child in self.model.children():
                if next(child.parameters(), None) is not None:
                    child.compile()
            self.model._wae_compiled = True
        if self.targets is not None and self.train_x is not None:
            self.targets = self.targets.to(self.device if self.source is not None else self.train_x.device)
        ws = self.trainer.world_size
        if ws > 1:
            self.model.gather = all_gather_with_grad
            self.model.rank = self.trainer.global_rank
        resuming = getattr(self.trainer, "ckpt_path", None) is not None
        if (self.cfg.pretrain_steps > 0 and not resuming and self.trainer.global_step == 0 and not self.pretrain_history
                and not self.skip_pretrain):
            self._pretrain()
        # Prior samples must differ across processes: one stream per rank.
        torch.manual_seed(self.cfg.seed * 1000 + 17 + self.trainer.global_rank + 7919 * self.trainer.global_step)

    def on_fit_end(self) -> None:
        self.model.gather = identity_gather
        self.model.rank = 0

    def _pretrain(self) -> None:
        """Encoder pre-training (same random stream on every process, so replicas stay identical)."""
        if self.model.pretrain_loss(self.train_x[:2].to(self.device)) is None:
            return
        g = torch.Generator(device="cpu").manual_seed(self.cfg.seed + 12345)
        opt = torch.optim.Adam(self.model.main_parameters(), lr=PRETRAIN_LR, betas=(0.9, 0.999))
        n = self.train_x.shape[0]
        self.model.train()
        for step in range(self.cfg.pretrain_steps):
            idx = torch.randint(0, n, (self.cfg.batch_size,), generator=g)
            if self.source is not None:  # rows read from disk, values decoded on the device
                loss = self.model.pretrain_loss(self.source.decode(self.source.read(idx).to(self.device)))
            else:
                loss = self.model.pretrain_loss(self.train_x[idx.to(self.device)])
            if not torch.isfinite(loss):
                raise TrainingError(f"non-finite pre-training loss at pre-training step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.pretrain_history.append(float(loss.detach()))

    # --- optimisation -----------------------------------------------------------------------------------------
    def configure_optimizers(self):
        c = self.cfg
        opt = torch.optim.Adam(self.model.main_parameters(), lr=c.lr, betas=tuple(c.betas))
        ms, fs = list(c.lr_milestones), list(c.lr_factors)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_multiplier(e, ms, fs))
        if not self.model.has_critic:
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        copt = torch.optim.Adam(self.model.critic_parameters(), lr=self.model.critic_lr(), betas=CRITIC_BETAS)
        csched = torch.optim.lr_scheduler.LambdaLR(copt, lambda e: lr_multiplier(e, ms, fs))
        return [opt, copt], [{"scheduler": sched, "interval": "epoch"}, {"scheduler": csched, "interval": "epoch"}]

    def _batch(self, idx: Tensor, raw: Tensor | None = None) -> Tensor:
        if raw is not None:
            return self.source.decode(raw)
        return self.train_x[idx.to(self.train_x.device)]

    def _check(self, terms: dict[str, Tensor]) -> bool:
        # One fused test and one host sync per step; the per-term search only runs when something is off.
        named = {k: v.detach() for k, v in terms.items() if not k.startswith("_")}
        if not named or bool(torch.isfinite(torch.stack([v.float().sum() for v in named.values()])).all()):
            return True
        bad = [k for k, v in named.items() if not torch.isfinite(v).all()]
        msg = f"non-finite loss at step {self.global_step} (epoch {self.current_epoch}) in term(s) {', '.join(bad)}"
        if self.cfg.on_nan == "skip":
            self.print(f"warning: {msg}; batch skipped")
            return False
        # the run engine adds which checkpoint is left (if any): the module does not know
        raise TrainingError(msg + " (train.on_nan=skip drops bad batches)")

    def _logging_step(self) -> bool:
        """Whether the Trainer writes logs after this step (calling ``self.log`` on other steps is wasted work)."""
        conn = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(conn, "should_update_logs", True))

    def _log_terms(self, terms: dict[str, Tensor]) -> None:
        if not self._logging_step():
            return
        logged = {f"train/{k}": v.detach() for k, v in terms.items() if not k.startswith("_")}
        self.log_dict(logged, on_step=True, on_epoch=False, prog_bar=False, sync_dist=False)
        self.log("loss", terms["loss"].detach(), prog_bar=True, on_step=True, on_epoch=False, logger=False)

    def training_step(self, batch: Tensor | tuple[Tensor, Tensor], batch_idx: int):
        idx, raw = batch if isinstance(batch, (tuple, list)) else (batch, None)  # streamed data carry their rows
        # once: the batch and its targets index with it
        idx = idx.to(self.device if self.source is not None else self.train_x.device)
        x = self._batch(idx, raw)
        saved = self._save_buffers()
        if self.model.has_critic:
            return self._adversarial_step(x, saved)
        terms = self.model.loss(x) if self.targets is None else self.model.loss(x, targets=self.targets[idx])
        if not self._check(terms):
            self._restore_buffers(saved)
            return None
        self._log_terms(terms)  # the Trainer writes every train.log_every steps
        return terms["loss"]

    def _save_buffers(self):
        # Batch-norm running statistics are updated in the forward pass: keep a copy to undo a skipped bad batch.
        return [b.clone() for b in self.model.buffers()] if self.cfg.on_nan == "skip" else None

    def _restore_buffers(self, saved) -> None:
        if saved is not None:
            with torch.no_grad():
                for b, v in zip(self.model.buffers(), saved):
                    b.copy_(v)

    def _adversarial_step(self, x: Tensor, saved=None):
        """Algorithm 1: one critic ascent step, then one encoder/decoder descent step (shared encoder pass)."""
        opt, copt = self.optimizers()
        codes = self.model.codes(x)
        closs = self.model.critic_loss(codes)
        terms_c = {"critic": closs}
        if not self._check(terms_c):
            self._restore_buffers(saved)
            return None
        copt.zero_grad(set_to_none=True)
        self.manual_backward(closs)
        copt.step()
        terms = self.model.loss(x, codes=codes)
        if not self._check(terms):
            self._restore_buffers(saved)
            return None
        opt.zero_grad(set_to_none=True)
        self.manual_backward(terms["loss"])
        # the critic received gradients through the encoder's penalty; they are not applied
        for p in self.model.critic_parameters():
            p.grad = None
        opt.step()
        self._log_terms({**terms, "critic": closs})
        return None

    def on_train_epoch_end(self) -> None:
        if self.model.has_critic:
            for s in self.lr_schedulers():
                s.step()

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return
        # A non-finite entry makes its tensor's norm non-finite: one fused pass and one host sync per step.
        if bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
            return
        bad = [n for n, p in self.model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if not bad:  # only a finite overflow of the norm itself
            return
        msg = f"non-finite gradient at step {self.global_step} in {bad[0]} (+{len(bad) - 1} more)"
        if self.cfg.on_nan == "skip":
            self.print(f"warning: {msg}; update skipped")
            for p in self.model.parameters():
                p.grad = None
            return
        raise TrainingError(msg + " (train.on_nan=skip drops bad updates)")
