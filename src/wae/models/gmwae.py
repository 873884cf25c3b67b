"""GM-WAE and its ELBO foil (the paper's GM-VAE): a categorical × Gaussian-mixture latent model (Gaujac, Feige & Barber).

Generative model: k ~ Cat(K) uniform, z | k ~ N(μ⁰_k, σ₀²I) with mutually equidistant means (exact simplex,
pairwise distance ``separation``·σ₀), x = g(z) deterministic.
Encoder q(z, k | x) = q_C(z | k, x) q_D(k | x): q_D is a softmax over a small DCGAN conv net; q_C(z | k, x) =
N(μ_k(x), diag σ_k²(x)) from K single-hidden-layer dense heads evaluated in one batched op.

``gm-wae`` minimises Eq. 4 with the expectation over k taken exactly:
    recon = cost_scale · (1/n) Σ_i Σ_k q_D(k|x_i) ‖x_i − g(z_ik)‖²,  z_ik ~ q_C(z|k,x_i)
    penalty = λ · MMD({z_ik, weight q_D(k|x_i)/n, group i}, prior mixture sampled per component)
All n·K codes are decoded in one batch (one sample of z per (x, k), as the paper).

``gm-wae-elbo`` (the paper's GM-VAE) maximises the ELBO of Eq. 2 with the exact sum over k (Bernoulli decoder by
default):
    E_{q_D}[E_{q_C} log p(x|z) − KL(q_C ‖ p(z|k))] − KL(q_D(k|x) ‖ p(k)).

Kernel scales. The paper's IMQ sum over C ∈ {0.1, …, 10}, absolute (:data:`KERNEL_BASE` 1): for σ₀ = 1, d = 10
the scales span from well inside one mode (E‖z − z'‖² = 2dσ₀² = 20 within a component) to about the squared mode
spacing (separation·σ₀)² = 16, so the MMD resolves the mass and shape of each mode. Scaling them to the expected
squared distance between two prior draws instead (2dσ₀² + (1 − 1/K)(separation·σ₀)²) sees the whole mixture as one
blob and lost (0.500 against 0.559 acc_paper at the same budget; benchmarks/notes).

The expectation over k (``k_estimator``). ``exact`` (the paper) decodes all K components of every datum, K times
the networks' cost. Late in training q_D(k|x) is nearly one-hot and most of those decodes multiply a cost by ≈ 0.
``sparse`` decodes, per datum, the most likely component C (weight q_D(k|x) each, exact) and one more,
j, drawn from the rest ∝ q_D(j|x) (the sum-and-sample estimator of Liu et al., 2019, "Rao-Blackwellized stochastic
gradients for discrete distributions"): j gets the weight q_j / π_j with π_j = q_j / r held fixed (r = 1 − Σ_C q_k,
the rest's mass), i.e. the value r and the gradient (r/q_j)∇q_j. So E_j[Σ_C q_k f_k + r f_j] = Σ_k q_k f_k for the
reconstruction cost f and likewise for every gradient, through q_D, the heads and the decoder; the weighted MMD
uses the same two codes per datum (its pairs of different data points see independent draws, so it stays
unbiased, with the weights' normalisers held fixed: each datum's weights sum to 1 by construction). The variance
is that of the rest's share r, which vanishes as q_D sharpens. With K ≤ 2 it is the exact sum; evaluation is
always exact. Unbiased holds for a decoder whose output for one code does not depend on the other codes decoded
with it (batch norm with fixed statistics, as the tests check by exact enumeration). In training the decoder's batch
norm normalises over the decoded batch, whose make-up the draw of j changes, so there the sparse estimate is slightly
biased (measured by exact enumeration: value 0.02–0.7 %, gradient 0.4–3.7 %). Taking the statistics from a fixed set
(each datum's most likely component's codes, under both estimators) removes the bias but lost on validation
(benchmarks/README.md, "Sparse against exact"), so the decode keeps batch statistics. Taking more components
exactly (three, or as many as keep the rest's mass below a bound) did not beat one on validation (benchmarks/notes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..divergences import DEFAULT_SCALES, kl_categorical, kl_normal_normal
from ..errors import ConfigError
from ..likelihoods import bernoulli_log_likelihood, clamp_logvar, gaussian_log_likelihood
from ..networks import BatchedHeads, build_decoder, build_encoder
from ..priors import build_prior
from .base import AutoEncoderModel, ConsistencyConfig, Objective
from .registry import register_model

__all__ = ["GMWAEConfig", "GMVAEFoilConfig", "GaussianMixtureAE"]


@dataclass
class GMWAEConfig(ConsistencyConfig):
    latent_dim: int = 10
    num_components: int = 10
    prior_std: float = 1.0
    separation: float = 4.0
    """Distance between any two prior means, in units of σ₀ (paper: 4)."""
    objective: ClassVar[str] = "wae"
    """``wae`` (Eq. 4); the foil's ``vae`` (the ELBO of Eq. 2). Set by the model's name, not a setting."""
    lam: float = 10.0
    cost_scale: float = 0.05
    discrete_encoder: str = "gm-discrete"
    discrete_width: float = 1.0
    decoder: str = "gm-dcgan"
    width: float = 1.0
    entropy_weight: float = 0.0
    """Beyond the paper (0 = off): weight of KL(q̄ ‖ p(k)) in the loss (both objectives), q̄ the mean over the batch
    of q_D(k|x) — with the uniform p(k) of the paper, −H(q̄) up to a constant. It asks for the prior's mass on every
    component (equal mass unless ``train.teacher`` set the weights), so two digits are pushed not to share one; with
    ``consistency.weight`` 3 it lifts GM-WAE's greedy accuracy (preset ``gm-wae-mnist-consistency``,
    benchmarks/README.md)."""
    k_estimator: str = "exact"
    """How the expectation over k is taken in training: ``exact`` (the paper: all K components decoded per datum)
    or ``sparse`` (the most likely plus one sampled from the rest, unbiased; see the module docstring)."""
    component_refit: bool = False
    """Beyond the paper (off by default): once training has ended, each component's Gaussian is refitted to the codes
    q_D assigns to it in the training data (their q_D-weighted mean and full covariance, the encoder's noise
    included; weights ∝ the components' shares), and samples — of one component or of the model — are drawn from the
    refitted components (ex-post density estimation per cluster, as the RAE paper does for a whole latent space, the
    clusters kept). The training prior is unchanged; its modes are wider than a cluster's codes, and their tails
    decode to ambiguous digits (benchmarks/README.md, "Generative clustering")."""


@dataclass
class GMVAEFoilConfig(GMWAEConfig):
    objective: ClassVar[str] = "vae"
    likelihood: str = "bernoulli"
    """Decoder likelihood: ``bernoulli`` or ``gaussian`` (variance ``obs_var``)."""
    obs_var: float = 1.0


OBJECTIVES = ("wae", "vae")
HEAD_HIDDEN = 16
"""Hidden units of each component's dense head q_C(z | k, x) (§3)."""
K_ESTIMATORS = ("exact", "sparse")
KERNEL_BASE = "1"
"""The IMQ kernel's scales 0.1 … 10 taken as they are (the paper; see the module docstring)."""
SAMPLES = 1
"""Samples of z per (x, k) in training (the paper's one)."""


@register_model("gm-wae", GMWAEConfig, "Gaussian-mixture WAE (Gaujac et al.), exact sum over k", "gmwae",
                "gm-wae-mnist")
@register_model("gm-wae-elbo", GMVAEFoilConfig, "GM-WAE's networks trained with the ELBO (the paper's GM-VAE; "
                "collapses)", "gmwae", "gm-wae-elbo-mnist", old_names=("gm-vae",))
class GaussianMixtureAE(AutoEncoderModel):
    has_discrete_latent = True

    def __init__(self, config: GMWAEConfig, data_shape):
        super().__init__(config, data_shape)
        checks = [
            (config.lam >= 0 and math.isfinite(config.lam), f"model.lam must be >= 0, got {config.lam}"),
            (config.cost_scale > 0 and math.isfinite(config.cost_scale),
             f"model.cost_scale must be > 0, got {config.cost_scale}"),
            (config.entropy_weight >= 0 and math.isfinite(config.entropy_weight),
             f"model.entropy_weight must be >= 0, got {config.entropy_weight}"),
            (config.k_estimator in K_ESTIMATORS,
             f"model.k_estimator must be one of {K_ESTIMATORS}, got {config.k_estimator!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        self.check_consistency_config()
        if config.objective == "vae" and config.likelihood not in ("bernoulli", "gaussian"):
            raise ConfigError(f"model.likelihood must be bernoulli or gaussian, got {config.likelihood!r}")
        K, d = config.num_components, config.latent_dim
        self.prior = build_prior("mixture", d, config.prior_std, K, config.separation)
        self.discrete = build_encoder(config.discrete_encoder, self.data_shape, K, config.discrete_width)
        self.heads = BatchedHeads(math.prod(self.data_shape), K, HEAD_HIDDEN, 2 * d)
        with torch.no_grad():
            self.heads.bias[:, d:].fill_(0.0)  # log-variances start at 0: σ_k ≈ 1 before pre-training
        self.decoder = build_decoder(config.decoder, self.data_shape, d, config.width)
        self.kernel = self.build_kernel("imq", KERNEL_BASE, DEFAULT_SCALES)
        if config.component_refit:  # only then, so that runs without it keep their state-dict keys
            self.register_buffer("refit_weights", self.prior.weights.clone())
            self.register_buffer("refit_means", self.prior.means.clone())
            self.register_buffer("refit_tril", torch.eye(d).repeat(K, 1, 1) * self.prior.std)

    # --- encoder ---------------------------------------------------------------------------------------------
    def q_discrete(self, x: Tensor) -> Tensor:
        """log q_D(k | x): (N, K)."""
        return torch.log_softmax(self.discrete(x), dim=-1)

    def q_continuous(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(μ_k(x), log σ_k²(x)) for every k: each (N, K, d)."""
        h = self.heads(x)
        mu, logvar = h.chunk(2, dim=-1)
        return mu, clamp_logvar(logvar)

    def cluster_probs(self, x: Tensor) -> Tensor:
        return self.q_discrete(x).exp()

    def encode(self, x: Tensor) -> Tensor:
        """μ_k*(x) for the most likely component k* = argmax_k q_D(k|x)."""
        logq = self.q_discrete(x)
        mu, _ = self.q_continuous(x)
        k = logq.argmax(-1)
        return mu[torch.arange(x.shape[0], device=x.device), k]

    def posterior_samples(self, x: Tensor):
        """All codes z_ik (one per component) with weights q_D(k|x_i)/n and group i."""
        q = self.cluster_probs(x)
        z, _, _ = self._selected_codes(x, None, 1)
        n, K = q.shape
        groups = torch.arange(n, device=x.device).repeat_interleave(K)
        return z.reshape(n * K, -1), (q / n).reshape(-1), groups

    def sample_posterior(self, x: Tensor) -> Tensor:
        """One z per x from Σ_k q_C(z|k,x) q_D(k|x) (k sampled): for plots."""
        q = self.cluster_probs(x)
        k = torch.multinomial(q, 1).squeeze(1)
        z, _, _ = self._selected_codes(x, None, 1)
        return z[torch.arange(x.shape[0], device=x.device), k, 0]

    # --- decoder ---------------------------------------------------------------------------------------------
    def decode(self, z: Tensor) -> Tensor:
        return self.output(self.decoder(z))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    # --- objectives ------------------------------------------------------------------------------------------
    def objective(self, x: Tensor, targets: Tensor | None = None) -> Objective:
        """``targets``: a target cluster per datum (−1: none) for ``pseudo_label_weight``, or None."""
        if self.config.objective == "wae":
            return self._wae_objective(x, targets)
        return self._vae_objective(x, targets)

    def components(self, logq: Tensor) -> tuple[Tensor | None, Tensor]:
        """The components a training step decodes per datum and their weights.

        Returns ``(idx, w)``: ``idx`` (n, M) component indices, or None for all K in order (exact); ``w`` (n, M)
        weights whose expectation, in value and gradient, is q_D(k|x) — q_D itself when exact; with the sparse
        estimator the largest q_D(k|x) and, for one j drawn ∝ q_D from the rest, q_j·(r/q_j) with the
        ratio held fixed (value r, the rest's mass). Evaluation (eval mode) is always exact.
        """
        K = self.config.num_components
        if self.config.k_estimator == "exact" or K <= 2 or not self.training:
            return None, logq.exp()
        top_lq, top = logq.topk(1, dim=-1)  # (n, 1)
        rest = logq.scatter(-1, top, float("-inf"))  # log q over the components not in the top set
        log_r = torch.logsumexp(rest, -1, keepdim=True)
        gumbel = -torch.empty_like(logq).exponential_().log()  # Gumbel-max: j ~ q restricted to the rest
        j = (rest.detach() + gumbel).argmax(-1, keepdim=True)
        lq_j = logq.gather(-1, j)
        w_j = lq_j.exp() * (log_r - lq_j).detach().exp()
        return torch.cat([top, j], -1), torch.cat([top_lq.exp(), w_j], -1)

    def _selected_codes(self, x: Tensor, idx: Tensor | None, samples: int):
        """Codes of the selected components: z (n, M, S, d) with their (μ, log σ²) (n, M, d)."""
        mu, logvar = self.q_continuous(x)
        if idx is not None:
            sel = idx.unsqueeze(-1).expand(-1, -1, mu.shape[-1])
            mu, logvar = mu.gather(1, sel), logvar.gather(1, sel)
        eps = torch.randn(mu.shape[0], mu.shape[1], samples, mu.shape[2], device=mu.device, dtype=mu.dtype)
        return mu.unsqueeze(2) + (0.5 * logvar).exp().unsqueeze(2) * eps, mu, logvar

    def _wae_objective(self, x: Tensor, targets: Tensor | None = None) -> Objective:
        cfg = self.config
        S = SAMPLES
        n = x.shape[0]
        logq = self.q_discrete(x)
        idx, w = self.components(logq)
        M = w.shape[1]
        z, _, _ = self._selected_codes(x, idx, S)  # (n, M, S, d)
        xr = self.decode(z.reshape(n * M * S, -1)).view(n, M, S, *x.shape[1:])
        err = (xr - x.unsqueeze(1).unsqueeze(1)).pow(2).flatten(3).sum(-1).mean(-1)  # (n, M)
        recon = cfg.cost_scale * (w * err).sum(-1).mean()
        weights = (w.unsqueeze(-1).expand(n, M, S) / (n * S)).reshape(-1)
        # the M·S codes of data point i are consecutive: group size M·S (pairs within a data point are left out)
        penalty = self.prior_mmd(z.reshape(n * M * S, -1), weights, M * S, fixed_mass=True)
        obj = Objective(paper=recon + cfg.lam * penalty, terms={"recon": recon, "mmd": penalty})
        if cfg.k_estimator != "exact":
            obj.logs["k_decoded"] = x.new_tensor(float(M))  # codes decoded per datum and sample this step
        self.add_entropy(obj, logq.exp())
        self.add_consistency(obj, logq, x, self.q_discrete)
        self.add_pseudo_labels(obj, logq, targets)
        return obj

    def after_fit(self, x: Tensor, batch_size: int = 500) -> None:
        """With ``component_refit``: refit each component's Gaussian to its training codes (see the config)."""
        if not self.config.component_refit:
            return
        was = self.training
        self.eval()
        g = torch.Generator(device="cpu").manual_seed(0)
        K, d = self.config.num_components, self.config.latent_dim
        acc = [torch.zeros(K, dtype=torch.float64), torch.zeros(K, d, dtype=torch.float64),
               torch.zeros(K, d, d, dtype=torch.float64)]
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                xb = x[i: i + batch_size].to(self.refit_means.device)
                q = self.cluster_probs(xb)
                mu, logvar = self.q_continuous(xb)
                eps = torch.randn(mu.shape, generator=g).to(mu)
                z = (mu + (0.5 * logvar).exp() * eps).double()  # (n, K, d): one code per datum and head
                w = q.double()
                acc[0] += w.sum(0).cpu()
                acc[1] += torch.einsum("nk,nkd->kd", w, z).cpu()
                acc[2] += torch.einsum("nk,nkd,nke->kde", w, z, z).cpu()
        W = acc[0].clamp_min(1e-12)
        m = acc[1] / W[:, None]
        cov = acc[2] / W[:, None, None] - m[:, :, None] * m[:, None, :]
        cov = cov + 1e-4 * torch.eye(d, dtype=cov.dtype)  # a floor: a component with (almost) no data stays proper
        dead = acc[0] < 1e-6
        cov[dead] = torch.eye(d, dtype=cov.dtype) * self.prior.std ** 2
        m[dead] = self.prior.means[dead.to(self.prior.means.device)].double().cpu()
        dev, dt = self.refit_means.device, self.refit_means.dtype
        self.refit_weights.copy_((acc[0] / acc[0].sum()).to(dev, dt))
        self.refit_means.copy_(m.to(dev, dt))
        self.refit_tril.copy_(torch.linalg.cholesky(cov).to(dev, dt))
        self.train(was)

    def _refit_codes(self, k: Tensor, std_scale: float, generator) -> Tensor:
        d = self.config.latent_dim
        eps = torch.randn(k.shape[0], d, generator=generator).to(self.refit_means)
        return self.refit_means[k] + std_scale * torch.einsum("nij,nj->ni", self.refit_tril[k], eps)

    def sample_codes(self, n: int, component: int | None = None, std_scale: float = 1.0,
                     generator: torch.Generator | None = None) -> Tensor:
        """With ``component_refit``: codes of the refitted components (k ~ their weights, or ``component``; each
        Gaussian's spread scaled by ``std_scale``), else the prior's."""
        if not self.config.component_refit:
            return super().sample_codes(n, component, std_scale, generator)
        if component is None:
            k = torch.multinomial(self.refit_weights.cpu(), n, replacement=True, generator=generator)
            return self._refit_codes(k.to(self.refit_means.device), std_scale, generator)
        if not 0 <= component < self.config.num_components:
            raise ConfigError(f"component {component} out of range: the model has {self.config.num_components} "
                              "components")
        kk = torch.full((n,), component, dtype=torch.long, device=self.refit_means.device)
        return self._refit_codes(kk, std_scale, generator)

    def component_mode(self, k: int) -> Tensor:
        """With ``component_refit``: the refitted mean of component k, else the prior's μ_k."""
        if not self.config.component_refit:
            return super().component_mode(k)
        if not 0 <= k < self.config.num_components:
            raise ConfigError(f"component {k} out of range: the model has {self.config.num_components} components")
        return self.refit_means[k: k + 1]

    def add_entropy(self, obj: Objective, q: Tensor) -> None:
        """H(q̄) + Σ_k q̄_k (log p_k − max_j log p_j) = −KL(q̄ ‖ p) − max_j log p_j, q̄ the mean of q_D(k|x) over the
        global batch and p the prior's weights — H(q̄) itself, to the bit, when p is uniform — an extra logged as
        ``qD_entropy`` always; the loss gets −``entropy_weight`` × it."""
        qbar = self.gather(q).mean(0)
        log_p = self.prior.log_weights.to(qbar)
        ent = -kl_categorical(qbar, torch.zeros_like(qbar)) + (qbar * (log_p - log_p.max())).sum()
        obj.extras["qD_entropy"] = (-self.config.entropy_weight, ent)

    def log_likelihood(self, logits: Tensor, x: Tensor) -> Tensor:
        if self.config.likelihood == "bernoulli":
            return bernoulli_log_likelihood(logits, x)
        return gaussian_log_likelihood(self.output(logits), x, math.log(self.config.obs_var))

    def _vae_objective(self, x: Tensor, targets: Tensor | None = None) -> Objective:
        S = SAMPLES
        n = x.shape[0]
        logq = self.q_discrete(x)
        q = logq.exp()
        idx, w = self.components(logq)
        M = w.shape[1]
        z, mu, logvar = self._selected_codes(x, idx, S)
        logits = self.decoder(z.reshape(n * M * S, -1))
        xe = x.unsqueeze(1).expand(n, M * S, *x.shape[1:]).reshape(n * M * S, *x.shape[1:])
        ll = self.log_likelihood(logits, xe).view(n, M, S).mean(-1)  # (n, M)
        prior_mu = self.prior.means[idx] if idx is not None else self.prior.means.unsqueeze(0).expand_as(mu)
        prior_lv = torch.full_like(mu, 2 * math.log(self.prior.std))
        kl_c = kl_normal_normal(mu, logvar, prior_mu, prior_lv)  # (n, M)
        kl_d = kl_categorical(q, self.prior.log_weights)  # (n,)
        recon = -(w * ll).sum(-1).mean()
        kl_cont = (w * kl_c).sum(-1).mean()
        kl_disc = kl_d.mean()
        paper = recon + kl_cont + kl_disc
        obj = Objective(paper=paper, terms={"recon_nll": recon, "kl_continuous": kl_cont, "kl_discrete": kl_disc},
                        elbo=-paper)
        self.add_entropy(obj, q)
        self.add_consistency(obj, logq, x, self.q_discrete)
        self.add_pseudo_labels(obj, logq, targets)
        return obj

    def pretrain_loss(self, x: Tensor) -> Tensor:
        """Match each head's code moments to its prior component: mean → μ⁰_k, covariance → σ₀²I (§3)."""
        z, _, _ = self._selected_codes(x, None, 1)
        z = z[:, :, 0]  # (n, K, d)
        n = z.shape[0]
        m = z.mean(0)  # (K, d)
        c = torch.einsum("nkd,nke->kde", z - m, z - m) / max(n - 1, 1)
        eye = torch.eye(z.shape[-1], device=z.device, dtype=z.dtype) * self.prior.std**2
        return (m - self.prior.means).pow(2).mean() + (c - eye).pow(2).mean()

    def eval_metrics(self, x: Tensor, max_decodes: int = 2000) -> dict[str, Tensor]:
        if self.config.objective != "vae":
            return {}
        # n·K·S codes are decoded per row of x: chunk the rows so that memory stays bounded at any width.
        rows = max(1, max_decodes // (self.config.num_components * SAMPLES))
        sums: dict[str, Tensor] = {}
        for i in range(0, x.shape[0], rows):
            xb = x[i: i + rows]
            t = self._vae_objective(xb)  # the ELBO of the paper's terms: no extra (entropy, consistency) in it
            for k, v in (("elbo", t.elbo), ("kl_continuous", t.terms["kl_continuous"]),
                         ("kl_discrete", t.terms["kl_discrete"])):
                sums[k] = sums.get(k, 0.0) + v * xb.shape[0]
        return {k: v / x.shape[0] for k, v in sums.items()}
