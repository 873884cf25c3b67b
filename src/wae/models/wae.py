"""Wasserstein auto-encoders (Tolstikhin et al., 2018) and the VAE baseline.

* ``wae-mmd`` — Algorithm 2: reconstruction cost + λ·MMD(q(z), p(z)), IMQ kernel sum.
* ``wae-gan`` — Algorithm 1: reconstruction cost + λ·JS estimated by a latent critic (trained by the engine with
  its own optimiser, lr 5e-4).
* ``vae`` — the ELBO with a Gaussian encoder and a Bernoulli (or Gaussian) decoder.

Cost: c(x, y) = cost_scale · ‖x − y‖². The paper writes c = ‖x − y‖² with λ = 10; the authors' code multiplies
the summed squared error by 0.05 (``cost_scale``), which is what the MNIST/CelebA presets use.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import ModelConfig
from ..divergences import DEFAULT_SCALES, LatentCritic, critic_loss, encoder_adversarial_loss, moment_matching_loss
from ..errors import ConfigError
from ..likelihoods import bernoulli_log_likelihood, clamp_logvar, gaussian_log_likelihood
from ..networks import build_decoder, build_encoder
from ..priors import build_prior
from .base import AutoEncoderModel, Objective, squared_l2
from .registry import register_model

__all__ = ["WAEConfig", "WAEGANConfig", "VAEConfig", "WAE", "VAE"]


@dataclass
class WAEConfig(ModelConfig):
    latent_dim: int = 8
    prior_std: float = 1.0
    encoder: str = "wae-dcgan"
    decoder: str = "wae-dcgan"
    width: float = 1.0
    """Channel multiplier for the conv nets (1.0 = the paper's 128…1024 filters)."""
    stochastic_encoder: bool = False
    """Gaussian encoder q(z|x) = N(μ(x), diag σ²(x)) instead of the paper's deterministic one."""
    lam: float = 10.0
    cost_scale: float = 0.05
    penalty: str = "mmd"
    kernel: str = "imq"
    kernel_base: str = "gaussian"
    """Base bandwidth C: ``gaussian`` = 2·d·σ² (WAE code), ``auto`` = E‖z−z'‖² under the prior, or a number."""
    kernel_scales: list[float] = field(default_factory=lambda: list(DEFAULT_SCALES))
    critic_hidden: int = 512
    critic_layers: int = 4
    critic_lr: float = 5e-4
    """Adam learning rate of WAE-GAN's critic (the paper's 5e-4; its lr schedule follows ``train.lr``'s)."""


@dataclass
class WAEGANConfig(WAEConfig):
    penalty: str = "gan"


@dataclass
class VAEConfig(ModelConfig):
    latent_dim: int = 8
    prior_std: float = 1.0
    encoder: str = "wae-dcgan"
    decoder: str = "wae-dcgan"
    width: float = 1.0
    likelihood: str = "bernoulli"
    """``bernoulli`` (binary-ish images) or ``gaussian`` with fixed variance ``obs_var``."""
    obs_var: float = 1.0
    kernel: str = "imq"
    kernel_base: str = "gaussian"
    kernel_scales: list[float] = field(default_factory=lambda: list(DEFAULT_SCALES))
    iw_samples: int = 100
    """Importance samples for the test log-likelihood bound (IWAE, K = 100)."""


PENALTIES = ("mmd", "gan")


class _EncoderDecoder(AutoEncoderModel):
    def _build(self, cfg, gaussian: bool):
        self.prior = build_prior("gaussian", cfg.latent_dim, cfg.prior_std)
        d = cfg.latent_dim
        feat = 2 * d if gaussian else d
        self.encoder = build_encoder(cfg.encoder, self.data_shape, feat, cfg.width)
        self.decoder = build_decoder(cfg.decoder, self.data_shape, d, cfg.width)
        self.gaussian = gaussian
        self.kernel = self.build_kernel(cfg.kernel, cfg.kernel_base, cfg.kernel_scales)

    def encode_dist(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.encoder(x)
        if not self.gaussian:
            return h, None
        mu, logvar = h.chunk(2, dim=-1)
        return mu, clamp_logvar(logvar)

    def encode_sample(self, x: Tensor) -> Tensor:
        mu, logvar = self.encode_dist(x)
        if logvar is None:
            return mu
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp()

    def encode(self, x: Tensor) -> Tensor:
        return self.encode_dist(x)[0]

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def decode(self, z: Tensor) -> Tensor:
        return self.output(self.decoder(z))

    def posterior_samples(self, x):
        return self.encode_sample(x), None, None

    def pretrain_loss(self, x: Tensor) -> Tensor:
        """Match the mean and covariance of encoded codes to the prior's (official WAE code, ``e_pretrain``)."""
        z = self.encode_sample(x)
        return moment_matching_loss(z, self.prior.sample((z.shape[0],)))


@register_model("wae-mmd", WAEConfig, "WAE with an MMD penalty (Algorithm 2)", "wae", "wae-mmd-mnist")
@register_model("wae-gan", WAEGANConfig, "WAE with a latent adversary (Algorithm 1)", "wae", "wae-gan-mnist")
class WAE(_EncoderDecoder):
    def __init__(self, config: WAEConfig, data_shape):
        super().__init__(config, data_shape)
        if config.penalty not in PENALTIES:
            raise ConfigError(f"model.penalty must be one of {PENALTIES}, got {config.penalty!r}")
        if not (config.lam >= 0 and math.isfinite(config.lam)):
            raise ConfigError(f"model.lam must be >= 0, got {config.lam}")
        if not (config.cost_scale > 0 and math.isfinite(config.cost_scale)):
            raise ConfigError(f"model.cost_scale must be > 0, got {config.cost_scale}")
        self._build(config, config.stochastic_encoder)
        self.has_critic = config.penalty == "gan"
        if self.has_critic:
            self.critic = LatentCritic(config.latent_dim, config.critic_hidden, config.critic_layers)

    def critic_parameters(self):
        return list(self.critic.parameters()) if self.has_critic else []

    def critic_lr(self) -> float:
        return self.config.critic_lr

    def codes(self, x: Tensor) -> Tensor:
        return self.encode_sample(x)

    def objective(self, x: Tensor, codes: Tensor | None = None) -> Objective:
        cfg = self.config
        z = self.codes(x) if codes is None else codes
        recon = cfg.cost_scale * squared_l2(self.decode(z), x).mean()
        if self.has_critic:
            penalty = encoder_adversarial_loss(self.critic, self.gather(z), 1.0)
            name = "gan_penalty"
        else:
            penalty = self.prior_mmd(z)
            name = "mmd"
        obj = Objective(paper=recon + cfg.lam * penalty, terms={"recon": recon, name: penalty})
        if self.gaussian:
            obj.logs["enc_logvar"] = self.encode_dist(x)[1].mean().detach() if codes is None else recon.new_zeros(())
        return obj

    def critic_loss(self, codes: Tensor) -> Tensor:
        """Critic loss of Algorithm 1 (descended): λ·[−log D(z_prior) − log(1 − D(z̃))] over the global batch."""
        z = self.gather(codes.detach())
        zp = self.gather(self.prior.sample((codes.shape[0],)))
        return critic_loss(self.critic, zp, z, self.config.lam)


@register_model("vae", VAEConfig, "VAE baseline (Gaussian encoder, Bernoulli/Gaussian decoder)", "wae", "vae-mnist")
class VAE(_EncoderDecoder):
    def __init__(self, config: VAEConfig, data_shape):
        super().__init__(config, data_shape)
        if config.likelihood not in ("bernoulli", "gaussian"):
            raise ConfigError(f"model.likelihood must be bernoulli or gaussian, got {config.likelihood!r}")
        if config.likelihood == "bernoulli" and not self.is_image:
            raise ConfigError("a Bernoulli likelihood needs data in [0, 1]: use model.likelihood=gaussian")
        self._build(config, True)
        self.costly_eval_metrics = config.iw_samples > 1  # the IWAE bound decodes iw_samples codes per example

    def log_likelihood(self, logits: Tensor, x: Tensor) -> Tensor:
        """log p(x | z) per example."""
        if self.config.likelihood == "bernoulli":
            return bernoulli_log_likelihood(logits, x)
        return gaussian_log_likelihood(self.output(logits), x, math.log(self.config.obs_var))

    def objective(self, x: Tensor) -> Objective:
        mu, logvar = self.encode_dist(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = -self.log_likelihood(self.decoder(z), x).mean()
        # KL(N(μ, σ²) ‖ N(0, s²I)) with prior std s
        s2 = self.config.prior_std**2
        kl = 0.5 * ((mu.pow(2) + logvar.exp()) / s2 - 1.0 - logvar + math.log(s2)).sum(-1).mean()
        return Objective(paper=rec + kl, terms={"recon_nll": rec, "kl": kl}, elbo=-(rec + kl))

    def elbo_terms(self, x: Tensor, samples: int) -> Tensor:
        """log w_s = log p(x|z_s) + log p(z_s) − log q(z_s|x) for s < samples: shape (samples, N)."""
        mu, logvar = self.encode_dist(x)
        std = (0.5 * logvar).exp()
        eps = torch.randn(samples, *mu.shape, device=mu.device, dtype=mu.dtype)
        z = mu + std * eps
        logits = self.decoder(z.reshape(-1, mu.shape[-1]))
        ll = self.log_likelihood(logits, x.repeat(samples, *([1] * (x.dim() - 1)))).view(samples, -1)
        log_q = (-0.5 * eps.pow(2) - 0.5 * logvar - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_p = self.prior.log_prob(z)
        return ll + log_p - log_q

    def eval_metrics(self, x: Tensor, max_decodes: int = 2000) -> dict[str, Tensor]:
        # The importance samples are decoded in chunks of at most ``max_decodes`` images (memory stays bounded
        # at any width and batch size; 100 samples × 500 test images at once would need tens of GB).
        chunk = max(1, max_decodes // max(1, x.shape[0]))
        S = self.config.iw_samples
        lw = torch.cat([self.elbo_terms(x, min(chunk, S - s)) for s in range(0, S, chunk)], 0)
        iwae = torch.logsumexp(lw, 0) - math.log(lw.shape[0])
        return {"elbo": lw[0].mean(), "iwae_bound": iwae.mean(), "nll_iwae": -iwae.mean()}
