"""The interface every model implements, and helpers they share.

A model is an ``nn.Module`` built from its typed config and the per-example data shape. The training engine only
calls :meth:`AutoEncoderModel.loss` (named terms, ``"loss"`` is minimised), the optional pre-training loss and,
for adversarial models, :meth:`critic_loss`. Keys of the returned dict that start with ``_`` are not logged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..data import augment
from ..divergences import Kernel, build_kernel, mmd
from ..errors import ConfigError
from ..priors import Prior

__all__ = ["AutoEncoderModel", "Consistency", "ConsistencyConfig", "Objective", "identity_gather", "one_code_per_group", "squared_l2"]


@dataclass
class Objective:
    """A model's objective on one batch, with the paper's terms apart from the regularisers beyond the papers.

    * ``paper`` — the value the paper's objective minimises (its terms with the paper's weights);
    * ``terms`` — the paper's named terms (logged);
    * ``extras`` — regularisers beyond the papers, ``name → (weight, value)``: the loss adds ``weight · value`` (a
      negative weight rewards the value, e.g. an entropy); the unweighted value is logged under ``name``;
    * ``logs`` — values that are only logged;
    * ``elbo`` — for likelihood models, the evidence lower bound of the paper's terms alone (never an extra).

    :attr:`loss` is the one place where they are summed; :meth:`as_dict` is what ``model.loss(x)`` returns.
    """

    paper: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    extras: dict[str, tuple[float, Tensor]] = field(default_factory=dict)
    logs: dict[str, Tensor] = field(default_factory=dict)
    elbo: Tensor | None = None

    @property
    def loss(self) -> Tensor:
        total = self.paper
        for weight, value in self.extras.values():
            if weight:
                total = total + weight * value
        return total

    def as_dict(self) -> dict[str, Tensor]:
        out = {"loss": self.loss, **self.terms}
        out.update({name: value.detach() for name, (_, value) in self.extras.items()})
        out.update(self.logs)
        if self.elbo is not None:
            out["elbo"] = self.elbo.detach()
        return out


@dataclass
class Consistency:
    """The cluster-consistency term that mixture models share (beyond the papers; ``weight`` 0 = off)."""

    weight: float = 0.0
    """Weight of KL(q(k|x) ‖ q(k|T(x))) per datum, T a random small affine warp of the image (``rotate`` / ``shift``
    / ``scale``) and the clean q(k|x) a fixed target (no gradient): the clusters are asked not to change under warps
    that keep a digit's identity."""
    rotate: float = 15.0
    """Largest rotation of T, in degrees (uniform in ±)."""
    shift: float = 2.0
    """Largest translation of T, in pixels per direction (uniform in ±, sub-pixel)."""
    scale: float = 0.1
    """Largest relative scaling of T (the factor is uniform in 1 ± this)."""
    noise: float = 0.0
    """Vector data (N×D), where no warp applies: T adds Gaussian noise of this many batch standard deviations to every
    feature (per feature, the batch's std, held fixed). 0 with ``dropout`` and ``resample`` 0: the term is refused on
    vectors."""
    dropout: float = 0.0
    """Vector data: T also replaces each feature, with this probability, by the batch mean of that feature."""
    resample: float = 0.0
    """Vector data: T then replaces each feature, with this probability, by the same feature of another datum of the
    batch drawn at random (SCARF's corruption, Bahri et al. 2022: a draw from the feature's empirical marginal, so
    the corrupted vector stays in the data's range and units)."""


@dataclass
class ConsistencyConfig(ModelConfig):
    """Config fields that mixture models share beyond the papers: the consistency term and the pseudo-labels."""

    consistency: Consistency = field(default_factory=Consistency)
    pseudo_label_weight: float = 0.0
    """Beyond the papers (0 = off): weight of the cross-entropy −log q(ŷ_i|x_i), averaged over the batch, towards a
    target cluster ŷ_i per training datum that the training loop provides: the consensus of several restarts
    (``train.restarts.select=ensemble``; self-labelling on an ensemble's partition, as SCAN's and DEC's self-training
    on their own confident labels). Data without a target (ŷ = −1) add nothing; the mean stays over the batch."""

    def takes_cluster_targets(self) -> bool:
        return self.pseudo_label_weight > 0


def identity_gather(t: Tensor) -> Tensor:
    return t


def squared_l2(x: Tensor, y: Tensor) -> Tensor:
    """‖x − y‖² per example (summed over all but the first dimension)."""
    return (x - y).pow(2).flatten(1).sum(1)


def one_code_per_group(z: Tensor, w: Tensor | None, groups: Tensor | None, n: int) -> Tensor:
    """One code per example from :meth:`AutoEncoderModel.posterior_samples`' ``(z, w, groups)``: ``z`` itself
    without weights; else ``n`` codes drawn ∝ ``w`` (without groups), or one per group ∝ its weights (Gumbel-max:
    the argmax of log w + Gumbel noise within each group; zero weights never drawn)."""
    if w is None:
        return z
    w = w.reshape(-1).float().clamp_min(0)
    if groups is None:
        return z[torch.multinomial(w, n, replacement=True)]
    groups = groups.reshape(-1)
    uniq, inv = torch.unique(groups, return_inverse=True)
    score = torch.log(w.clamp_min(1e-30)) - torch.log(-torch.log(torch.rand_like(w).clamp_min(1e-30)))
    score = torch.where(w > 0, score, torch.full_like(score, -float("inf")))
    best = torch.full((uniq.numel(),), -float("inf"), device=w.device, dtype=score.dtype)
    best = best.scatter_reduce(0, inv, score, reduce="amax")
    is_best = score == best[inv]
    idx = torch.full((uniq.numel(),), -1, dtype=torch.long, device=w.device)
    pos = torch.arange(w.numel(), device=w.device)
    return z[idx.scatter_reduce(0, inv[is_best], pos[is_best], reduce="amax")]


class AutoEncoderModel(nn.Module):
    """Common interface: encode, decode, reconstruct, sample(n), loss(x) → named terms.

    Capabilities that evaluation and the command line ask for, instead of probing attributes:

    * ``has_discrete_latent`` — a discrete latent with :meth:`cluster_probs` (clustering metrics apply);
    * :attr:`num_components` — mixture components of the generative model (1: none; per-component sampling);
    * :attr:`latent_layers` — depth of the latent hierarchy (> 1: :meth:`encode_layers`, :meth:`reconstruct_from`);
    * :meth:`mmd_reference` — the (prior, kernel) the aggregated posterior is compared with, or None;
    * ``costly_eval_metrics`` — :meth:`eval_metrics` costs many decodes per example (evaluate a subset);
    * :attr:`takes_cluster_targets` — training passes a target cluster per datum, ``loss(x, targets=…)``.
    """

    config: ModelConfig
    prior: Prior | None
    kernel: Kernel | None
    has_critic: bool = False
    has_discrete_latent: bool = False
    costly_eval_metrics: bool = False

    def __init__(self, config: ModelConfig, data_shape: tuple[int, ...]):
        super().__init__()
        self.config = config
        self.data_shape = tuple(int(s) for s in data_shape)
        self.is_image = len(self.data_shape) == 3
        self.prior = None  # set by the model (a module attribute, so not a class-level default)
        self.kernel = None
        # Batch-level divergences gather codes across processes through this hook (identity on one process).
        self.gather: Callable[[Tensor], Tensor] = identity_gather
        self.rank: int = 0

    # --- what every model provides --------------------------------------------------------------------------
    def objective(self, x: Tensor, **kw) -> Objective:
        """The objective on batch ``x``: the paper's terms and, apart, the extras beyond the paper."""
        raise NotImplementedError

    def loss(self, x: Tensor, *args, **kw) -> dict[str, Tensor]:
        """Named terms of the objective on ``x`` (``"loss"`` is minimised; see :class:`Objective`)."""
        return self.objective(x, *args, **kw).as_dict()

    def encode(self, x: Tensor) -> Tensor:
        """A deterministic code for x (the posterior mean, or the mean of the most likely component)."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        """The decoder's mean in data space."""
        raise NotImplementedError

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def sample_codes(self, n: int, component: int | None = None, std_scale: float = 1.0,
                     generator: torch.Generator | None = None) -> Tensor:
        """The n codes that :meth:`sample` (``component`` None) or :meth:`sample_component` decode: the one sampling
        path of every caller (``wae sample``, the estimator, galleries, reports). Here the prior's — of component
        ``component`` when given, its spread scaled by ``std_scale`` (around the prior's mean without a
        component); models that sample elsewhere (refitted components) override it."""
        if component is not None:
            if self.prior.num_components == 1 and component != 0:
                raise ConfigError(f"{type(self).__name__} has no mixture components to sample from (only 0)")
            return self.prior.sample_component(component, n, std_scale, generator)
        z = self.prior.sample((n,), generator=generator)
        return z if std_scale == 1.0 else self.prior.mean + (z - self.prior.mean) * std_scale

    def component_mode(self, k: int) -> Tensor:
        """The code (1, d) at the centre of component k that :meth:`sample_component` draws around: the prior's
        mean μ_k here (a "decoded mode" is ``decode`` of it)."""
        if not 0 <= k < self.prior.num_components:
            raise ConfigError(f"component {k} out of range: the prior has {self.prior.num_components} components")
        return self.prior.means[k: k + 1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(self.sample_codes(n, generator=generator))

    def posterior_samples(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Samples of the aggregated posterior q(z) for x: (z, weights or None, groups or None) — MMD-ready."""
        return self.encode(x), None, None

    # --- capabilities --------------------------------------------------------------------------------------
    @property
    def takes_cluster_targets(self) -> bool:
        """Whether training passes a target cluster per datum to :meth:`loss` (``targets=``), as its config
        declares (the pseudo-label term of the mixture models)."""
        return self.config.takes_cluster_targets()

    @property
    def num_components(self) -> int:
        """Mixture components of the generative model (1 for a single Gaussian prior)."""
        return self.prior.num_components if self.prior is not None else 1

    @property
    def latent_layers(self) -> int:
        """Depth of the latent hierarchy (1: one latent layer)."""
        return 1

    def check_depth(self, depth: int, allow_zero: bool = False) -> None:
        """Refuse a depth this model does not have (one line)."""
        if self.latent_layers == 1:
            raise ConfigError(f"{type(self).__name__} has no latent hierarchy: a depth applies to stacked-wae / wae-deep")
        lo = 0 if allow_zero else 1
        if not lo <= int(depth) <= self.latent_layers:
            raise ConfigError(f"depth must be between {lo} and {self.latent_layers} for this {self.latent_layers}-layer "
                              f"model, got {depth}")

    def encode_layers(self, x: Tensor, depth: int | None = None) -> list[Tensor]:
        """Codes of layers 1 … depth (hierarchical models); one layer here."""
        self.check_depth(depth if depth is not None else 1)
        return [self.encode(x)]

    def reconstruct_from(self, x: Tensor, depth: int) -> Tensor:
        """Encode to layer ``depth`` and decode from there (hierarchical models)."""
        self.check_depth(depth, allow_zero=True)
        return self.reconstruct(x)

    def mmd_reference(self) -> tuple[Prior, Kernel] | None:
        """``(prior, kernel)``: what the aggregated posterior of :meth:`posterior_samples` is compared with by the
        MMD (evaluation's ``mmd_prior``), or None for a model without one."""
        return (self.prior, self.kernel) if self.prior is not None and self.kernel is not None else None

    def sample_posterior(self, x: Tensor) -> Tensor:
        """One code of the aggregated posterior per example: the code of :meth:`posterior_samples`, or, for weighted
        codes (several per example), one drawn per example ∝ its weights (:func:`one_code_per_group`)."""
        return one_code_per_group(*self.posterior_samples(x), x.shape[0])

    # --- optional ------------------------------------------------------------------------------------------
    def pretrain_loss(self, x: Tensor) -> Tensor | None:
        """Loss for the encoder pre-training phase, or None when the model has none."""
        return None

    def cluster_probs(self, x: Tensor) -> Tensor | None:
        """q(k | x) for models with a discrete latent (N × K), else None."""
        return None

    def sample_component(self, k: int, n: int, std_scale: float = 1.0, generator=None) -> Tensor:
        return self.decode(self.sample_codes(n, k, std_scale, generator))

    def critic_loss(self, codes: Tensor) -> Tensor:  # pragma: no cover - adversarial models only
        raise NotImplementedError

    def critic_parameters(self):
        return []

    def critic_lr(self) -> float:  # pragma: no cover - adversarial models only
        """The critic's learning rate (its optimiser's; models with a critic declare it)."""
        raise NotImplementedError

    def main_parameters(self):
        crit = {id(p) for p in self.critic_parameters()}
        return [p for p in self.parameters() if id(p) not in crit]

    def after_fit(self, x: Tensor) -> None:
        """Model upkeep once training has ended, given the training data ``x`` (e.g. refitting the components a
        sampler draws from); called before the model is exported. Nothing by default."""

    def eval_metrics(self, x: Tensor) -> dict[str, Tensor]:
        """Extra per-batch test metrics (means over the batch), e.g. the ELBO for VAE-type models."""
        return {}

    # --- shared helpers ------------------------------------------------------------------------------------
    def check_consistency_config(self) -> None:
        """Refuse bad values of the :class:`ConsistencyConfig` fields (and the term on vector data without a
        perturbation)."""
        c, p = self.config.consistency, self.config.pseudo_label_weight
        checks = [
            (c.weight >= 0 and math.isfinite(c.weight), f"model.consistency.weight must be >= 0, got {c.weight}"),
            (0 <= c.rotate <= 180, f"model.consistency.rotate must be 0-180 degrees, got {c.rotate}"),
            (0 <= c.shift <= 8, f"model.consistency.shift must be 0-8 pixels, got {c.shift}"),
            (0 <= c.scale < 0.5, f"model.consistency.scale must be in [0, 0.5), got {c.scale}"),
            (0 <= c.noise <= 10 and math.isfinite(c.noise),
             f"model.consistency.noise must be 0-10 standard deviations, got {c.noise}"),
            (0 <= c.dropout < 1, f"model.consistency.dropout must be in [0, 1), got {c.dropout}"),
            (0 <= c.resample < 1, f"model.consistency.resample must be in [0, 1), got {c.resample}"),
            (p >= 0 and math.isfinite(p), f"model.pseudo_label_weight must be >= 0, got {p}"),
            (c.weight == 0 or self.is_image or (len(self.data_shape) == 1 and (
                c.noise > 0 or c.dropout > 0 or c.resample > 0)),
             f"model.consistency.weight warps images; for vector data (this model's have shape {self.data_shape}) "
             "set model.consistency.noise, .dropout or .resample > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def consistency_kl(self, log_q: Tensor, x: Tensor, log_q_fn: Callable[[Tensor], Tensor]) -> Tensor:
        """Mean over the batch of KL(q(k|x) ‖ q(k|T(x))): ``log_q`` (N, K) is the clean log q(k|x), held fixed;
        ``log_q_fn`` maps a batch to log q(k|·) and is applied to T(x): images warped by a random affine T, vectors
        perturbed by :meth:`perturb_vectors`."""
        c = self.config.consistency
        if self.is_image:
            warped = augment.random_affine(x, c.rotate, c.shift, c.scale)
        else:
            warped = self.perturb_vectors(x)
        target = log_q.detach()
        return (target.exp() * (target - log_q_fn(warped))).sum(-1).mean()

    def perturb_vectors(self, x: Tensor) -> Tensor:
        """T for vector data (N, D): every feature j gets Gaussian noise of std ``consistency.noise`` · s_j, s_j the
        batch's standard deviation of feature j, then is replaced by the batch mean of j with probability
        ``consistency.dropout``, then by the same feature of a random datum of the batch with probability
        ``consistency.resample``; batch statistics and resampled values held fixed. Batched ops, no loop over
        examples."""
        c = self.config.consistency
        xd = x.detach()
        out = x
        if c.noise > 0:
            std = xd.std(0, keepdim=True) if x.shape[0] > 1 else torch.ones_like(xd[:1])
            out = out + torch.randn_like(x) * (std * c.noise)
        if c.dropout > 0:
            drop = torch.rand_like(x) < c.dropout
            out = torch.where(drop, xd.mean(0, keepdim=True).expand_as(x), out)
        if c.resample > 0:
            rows = torch.randint(x.shape[0], x.shape, device=x.device)  # per entry: which datum lends feature j
            swap = torch.rand_like(x) < c.resample
            out = torch.where(swap, xd.gather(0, rows), out)
        return out

    def add_consistency(self, obj: Objective, log_q: Tensor, x: Tensor,
                        log_q_fn: Callable[[Tensor], Tensor]) -> None:
        """In training with ``consistency.weight`` > 0, add :meth:`consistency_kl` to the objective's extras."""
        w = self.config.consistency.weight
        if w and self.training:
            obj.extras["consistency"] = (w, self.consistency_kl(log_q, x, log_q_fn))

    def set_cluster_weights(self, log_weights: Tensor) -> None:
        """Set the mixture prior's weights p(k) (``log_weights``: K logs, e.g. a teacher's cluster shares); a model
        without a K-component prior refuses."""
        prior = getattr(self, "prior", None)
        if prior is None or prior.num_components < 2 or prior.num_components != len(log_weights):
            raise ConfigError(f"{type(self).__name__} has no {len(log_weights)}-component prior whose weights a "
                              "teacher could set")
        prior.log_weights.copy_(torch.as_tensor(log_weights).to(prior.log_weights))

    def add_pseudo_labels(self, obj: Objective, log_q: Tensor, targets: Tensor | None) -> None:
        """In training with ``pseudo_label_weight`` > 0 and ``targets`` (N ints, −1 = none) given, add the mean over
        the batch of −log q(ŷ_i|x_i) (``log_q`` (N, K), with its gradient) to the objective's extras."""
        w = self.config.pseudo_label_weight
        if not (w and self.training and targets is not None):
            return
        has = targets >= 0
        nll = -log_q.gather(1, targets.clamp_min(0).unsqueeze(1)).squeeze(1)
        obj.extras["pseudo_labels"] = (w, torch.where(has, nll, torch.zeros_like(nll)).mean())

    def output(self, logits: Tensor) -> Tensor:
        """Decoder logits → data-space mean: sigmoid for images in [0, 1], identity for vector data."""
        return torch.sigmoid(logits) if self.is_image else logits

    def build_kernel(self, name: str, base: float | str, scales) -> Kernel:
        if base == "auto" or base is None or base == "prior":
            value = self.prior.expected_sq_dist()
        elif base == "gaussian":
            value = 2.0 * self.prior.dim * self.prior.std**2
        else:
            try:
                value = float(base)
            except (TypeError, ValueError):
                raise ConfigError(f"model.kernel_base must be a number, 'auto' or 'gaussian', got {base!r}") from None
        return build_kernel(name, value, scales)

    def prior_mmd(self, z: Tensor, weights: Tensor | None = None, groups: Tensor | int | None = None,
                  fixed_mass: bool = False) -> Tensor:
        """λ-free MMD between posterior samples and fresh prior samples over the *global* batch.

        Each process draws prior samples for its own codes (as many as codes for a Gaussian; for a mixture,
        ⌈n/K⌉ per component, stratified — see ``Prior.sample_stratified``); codes, weights, group ids and prior
        samples are then gathered across processes, so N processes compute exactly the MMD of one process on the
        concatenated batch. Weights are renormalised to sum to 1 after gathering. ``groups`` may be an int (the
        codes come in consecutive groups of that size, as GM-WAE lays them out); it stays valid after gathering.

        ``fixed_mass``: every group's total weight is a known constant (GM-WAE's
        q_D(·|x_i)/n), so the weights' normalisers enter without gradient — exact, and it keeps the sparse estimate
        over k unbiased in its gradient too.
        """
        zp, wp, gp = self.prior.reference_sample(z.shape[0])
        if self.gather is not identity_gather:
            offset = self.rank * (1 << 32)
            z, zp = self.gather(z), self.gather(zp.detach())
            weights = self.gather(weights) if weights is not None else None
            if isinstance(groups, Tensor):
                groups = self.gather(groups + offset)
            wp = self.gather(wp) if wp is not None else None
        if weights is not None:
            total = weights.sum()
            weights = weights / (total.detach() if fixed_mass else total)
        if wp is not None:
            wp = wp / wp.sum()
        return mmd(z, zp, self.kernel, weights, wp, groups, gp, detach_norm=fixed_mass)
