"""GMVAE (Dilokthanakul et al.): Eq. 3, every ELBO term of Eq. 4 and the constraint of Eq. 7 against references."""
import math
from dataclasses import replace

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from wae.config import RunConfig, load_preset
from wae.errors import ConfigError
from wae.models import create_model
from wae.models.gmvae import GMVAE, GMVAEConfig

D = torch.distributions

TINY = dict(architecture="synthetic", latent_dim=3, w_dim=2, num_components=4, hidden=8)


def tiny(shape=(2,), **kw) -> GMVAE:
    torch.manual_seed(0)
    cfg = {**TINY, **kw}
    return create_model("gmvae", shape, **cfg).double()


def _mixture_params_loop(model: GMVAE, w: torch.Tensor, k: int):
    """μ_k(w), σ_k(w) from the raw output of β: K mean streams, then K log-variance streams (Table A.2)."""
    K, dx = model.config.num_components, model.config.latent_dim
    out = model.prior_net(w.unsqueeze(0))[0]
    mu = out[k * dx:(k + 1) * dx]
    logvar = out[K * dx + k * dx:K * dx + (k + 1) * dx]
    return mu, (0.5 * logvar).exp()


def _bayes_rule(model: GMVAE, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """p(z_j=1 | x, w) = π_j N(x|μ_j(w), σ_j(w)) / Σ_k π_k N(x|μ_k(w), σ_k(w)), by an explicit loop over k."""
    K = model.config.num_components
    joint = []
    for k in range(K):
        mu, std = _mixture_params_loop(model, w, k)
        joint.append(Independent(Normal(mu, std), 1).log_prob(x).exp() / K)
    joint = torch.stack(joint)
    return joint / joint.sum()


# --- Eq. 3 --------------------------------------------------------------------------------------------------------

def test_z_posterior_matches_bayes_rule():
    model = tiny()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    w = torch.randn(6, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        got = model.z_posterior(x, w)
        ref = torch.stack([_bayes_rule(model, x[i], w[i]) for i in range(6)])
    assert got.shape == (6, 4)
    assert torch.allclose(got.sum(-1), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(got, ref, atol=1e-10)


def test_z_posterior_batches_over_leading_dims():
    model = tiny()
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    w = torch.randn(3, 5, 2, dtype=torch.float64)
    with torch.no_grad():
        full = model.z_posterior(x, w)
        flat = model.z_posterior(x.reshape(15, 3), w.reshape(15, 2)).view(3, 5, 4)
    assert torch.allclose(full, flat)


# --- Eq. 4 terms --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["gaussian-learnt-var", "gaussian-fixed-var", "bernoulli-image"])
def test_elbo_terms_against_loop_references(case):
    if case == "bernoulli-image":
        model, x = tiny((1, 3, 3), likelihood="bernoulli", mc_samples=3), torch.rand(5, 1, 3, 3, dtype=torch.float64)
    elif case == "gaussian-learnt-var":
        model, x = tiny(likelihood="gaussian", learn_obs_var=True, mc_samples=3), torch.randn(5, 2).double()
    else:
        model, x = tiny(likelihood="gaussian", obs_var=0.3, mc_samples=3), torch.randn(5, 2).double()
    M, N, K = 3, 5, 4
    g = torch.Generator().manual_seed(2)
    eps_x = torch.randn(M, N, 3, generator=g, dtype=torch.float64)
    eps_w = torch.randn(M, N, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        t = model.elbo_terms(x, eps_x, eps_w)
        mu_x, lv_x, mu_w, lv_w = model.q_params(x)
        sd_x, sd_w = (0.5 * lv_x).exp(), (0.5 * lv_w).exp()

        # w-prior: analytic KL against torch.distributions.
        ref_w = kl_divergence(Independent(Normal(mu_w, sd_w), 1), Independent(Normal(torch.zeros_like(mu_w), 1.0), 1))
        assert torch.allclose(t["w_prior_kl"], ref_w, atol=1e-10)

        recon_ref = torch.zeros(N, dtype=torch.float64)
        cond_ref = torch.zeros(N, dtype=torch.float64)
        zkl_ref = torch.zeros(N, dtype=torch.float64)
        q_x = [Independent(Normal(mu_x[i], sd_x[i]), 1) for i in range(N)]
        for j in range(M):
            for i in range(N):
                xs = mu_x[i] + sd_x[i] * eps_x[j, i]
                ws = mu_w[i] + sd_w[i] * eps_w[j, i]
                # Reconstruction: log p(y | x^(j)) by the decoder on one sample at a time.
                out = model.decoder(xs.unsqueeze(0))[0]
                if case == "bernoulli-image":
                    # Continuous-valued y in [0, 1] (as for MNIST grey levels): the Bernoulli log-mass formula.
                    ll = Independent(Bernoulli(logits=out, validate_args=False), 3).log_prob(x[i])
                elif case == "gaussian-learnt-var":
                    mean, logvar = out[:2], out[2:]
                    ll = Independent(Normal(mean, (0.5 * logvar).exp()), 1).log_prob(x[i])
                else:
                    ll = Independent(Normal(out, math.sqrt(0.3)), 1).log_prob(x[i])
                recon_ref[i] -= ll / M
                # Conditional prior (Eq. 5) and z-prior (Eq. 6), one component at a time.
                p = _bayes_rule(model, xs, ws)
                for k in range(K):
                    mu_k, sd_k = _mixture_params_loop(model, ws, k)
                    cond_ref[i] += p[k] * kl_divergence(q_x[i], Independent(Normal(mu_k, sd_k), 1)) / M
                zkl_ref[i] += (p * (p * K).log()).sum() / M
                assert torch.allclose(t["_x"][j, i], xs) and torch.allclose(t["_w"][j, i], ws)
    assert torch.allclose(t["recon_nll"], recon_ref, atol=1e-9)
    assert torch.allclose(t["cond_prior_kl"], cond_ref, atol=1e-9)
    assert torch.allclose(t["z_prior_kl"], zkl_ref, atol=1e-9)
    assert (t["z_prior_kl"] >= 0).all() and (t["z_prior_kl"] <= math.log(K) + 1e-9).all()

    # loss = −ELBO = the sum of the four batch-mean terms (no constraint), all named terms are logged.
    with torch.no_grad():
        out = model.loss(x, eps_x, eps_w)
    for key in ("recon_nll", "cond_prior_kl", "w_prior_kl", "z_prior_kl", "z_prior_term", "elbo"):
        assert key in out
    total = recon_ref.mean() + cond_ref.mean() + ref_w.mean() + zkl_ref.mean()
    assert torch.allclose(out["loss"], total, atol=1e-9)
    assert torch.allclose(out["elbo"], -total, atol=1e-9)
    assert torch.allclose(out["z_prior_term"], out["z_prior_kl"])


def test_conditional_prior_term_is_monte_carlo_of_its_expectation():
    """Eq. 5 with many samples ≈ a large independent Monte Carlo of E_{q(w)q(x)}[Σ_k p(z_k|x,w) KL_k]."""
    model = tiny(mc_samples=4000)
    x = torch.randn(2, 2).double()
    torch.manual_seed(5)
    with torch.no_grad():
        est = model.elbo_terms(x)["cond_prior_kl"]
        mu_x, lv_x, mu_w, lv_w = model.q_params(x)
        xs = mu_x + (0.5 * lv_x).exp() * torch.randn(4000, 2, 3, dtype=torch.float64)
        ws = mu_w + (0.5 * lv_w).exp() * torch.randn(4000, 2, 2, dtype=torch.float64)
        mu_k, lv_k = model.mixture_params(ws)
        p = model.z_posterior(xs, ws)
        kl = D.kl_divergence(Independent(Normal(mu_x.unsqueeze(-2), (0.5 * lv_x).exp().unsqueeze(-2)), 1),
                             Independent(Normal(mu_k, (0.5 * lv_k).exp()), 1))
        ref = (p * kl).sum(-1).mean(0)
    assert torch.allclose(est, ref, rtol=0.05, atol=0.02)


# --- Eq. 7 --------------------------------------------------------------------------------------------------------

def _grads(model, x, eps_x, eps_w, key="loss", subtract_z=False):
    model.zero_grad()
    out = model.loss(x, eps_x, eps_w)
    val = out[key] - (out["z_prior_kl"] if subtract_z else 0)
    val.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def _close(a, b):
    return all(torch.allclose(u, v, atol=1e-12, rtol=1e-9) for u, v in zip(a, b))


def _spread_components(model, n, seed):
    """Spread the components' means (so the z-posterior is informative); n inputs and M noise draws from ``seed``."""
    K, M = model.config.num_components, model.config.mc_samples
    with torch.no_grad():
        model.prior_net[2].bias[: K * 3] = torch.randn(K * 3, dtype=torch.float64) * 2
    x = torch.randn(n, 2).double()
    g = torch.Generator().manual_seed(seed)
    return x, torch.randn(M, n, 3, generator=g).double(), torch.randn(M, n, 2, generator=g).double()


def test_min_info_constraint_gradient():
    model = tiny(num_components=6, mc_samples=2)
    x, eps_x, eps_w = _spread_components(model, 8, seed=3)
    kl = model.loss(x, eps_x, eps_w)["z_prior_kl"].item()
    assert 0.05 < kl < math.log(6) - 0.05

    model.config.min_info_lambda = 0.0
    unconstrained = _grads(model, x, eps_x, eps_w)
    without_z = _grads(model, x, eps_x, eps_w, subtract_z=True)
    assert not _close(unconstrained, without_z)  # the z-prior term does have a gradient

    # Below the threshold: held at λ, zero gradient — the loss's gradient is that of the other three terms.
    model.config.min_info_lambda = (kl + math.log(6)) / 2
    out = model.loss(x, eps_x, eps_w)
    assert out["z_prior_term"].item() == pytest.approx(model.config.min_info_lambda)
    assert out["z_prior_kl"].item() == pytest.approx(kl)
    assert all(g.abs().max() == 0 for g in _grads(model, x, eps_x, eps_w, key="z_prior_term"))
    assert _close(_grads(model, x, eps_x, eps_w), without_z)

    # Above the threshold: the plain KL, the unconstrained gradient.
    model.config.min_info_lambda = kl / 2
    out = model.loss(x, eps_x, eps_w)
    assert out["z_prior_term"].item() == pytest.approx(kl)
    assert _close(_grads(model, x, eps_x, eps_w), unconstrained)


def test_min_info_constraint_per_example():
    model = tiny(num_components=6, min_info_reduction="example")
    with torch.no_grad():
        model.prior_net[2].bias[: 6 * 3] = torch.randn(18, dtype=torch.float64) * 2
    x = torch.randn(16, 2).double() * 2
    eps_x, eps_w = torch.randn(1, 16, 3).double(), torch.randn(1, 16, 2).double()
    per = model.elbo_terms(x, eps_x, eps_w)["z_prior_kl"].detach()
    srt = per.sort().values
    lam = 0.5 * (srt[7] + srt[8]).item()  # half the examples above λ, none exactly at it
    model.config.min_info_lambda = lam
    out = model.loss(x, eps_x, eps_w)
    assert out["z_prior_term"].item() == pytest.approx(per.clamp_min(lam).mean().item())
    # Gradient of the constrained term = gradient of the KL summed over the examples above λ only (÷ N).
    model.zero_grad()
    out["z_prior_term"].backward()
    got = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    t = model.elbo_terms(x, eps_x, eps_w)["z_prior_kl"]
    (t * (per > lam)).sum().div(16).backward()
    ref = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert _close(got, ref)


def test_authors_code_posterior_gradient():
    """posterior_grad="authors_code": same loss value; the conditional-prior term's gradient through p_β(z|x,w)
    reversed above the threshold (the released main.lua), the exact ELBO gradient below it."""
    model = tiny(num_components=6, mc_samples=2, min_info_lambda=0.1)
    x, eps_x, eps_w = _spread_components(model, 8, seed=5)
    exact_out = model.loss(x, eps_x, eps_w)
    kl = exact_out["z_prior_kl"].item()
    assert 0.1 < kl < math.log(6) - 0.05
    exact = _grads(model, x, eps_x, eps_w)

    def reference():  # the other terms + Σ sg(p)·KL_k − Σ p·sg(KL_k), written out by hand
        model.zero_grad()
        t = model.elbo_terms(x, eps_x, eps_w)
        pz, kl_k = t["_pz"], t["_kl_k"]
        cond = ((pz.detach() * kl_k).sum(-1) - (pz * kl_k.detach()).sum(-1)).mean(0).mean()
        z = t["z_prior_kl"].mean().clamp_min(model.config.min_info_lambda)
        (t["recon_nll"].mean() + t["w_prior_kl"].mean() + z + cond).backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]

    model.config.posterior_grad = "authors_code"
    out = model.loss(x, eps_x, eps_w)
    assert out["loss"].item() == pytest.approx(exact_out["loss"].item(), rel=1e-12)
    above = _grads(model, x, eps_x, eps_w)
    assert _close(above, reference()) and not _close(above, exact)
    model.config.min_info_lambda = (kl + math.log(6)) / 2  # z-prior term below λ: nothing reversed
    model.config.posterior_grad = "exact"
    exact_below = _grads(model, x, eps_x, eps_w)
    model.config.posterior_grad = "authors_code"
    assert _close(_grads(model, x, eps_x, eps_w), exact_below)


def test_usage_term_against_direct_marginal():
    """usage_weight γ adds γ·KL(p̄ ‖ U) with p̄ the batch-and-sample mean of p_β(z|x,w), computed here by Bayes' rule
    point by point; usage_kl is logged whether or not γ > 0."""
    model = tiny(num_components=5, mc_samples=3)
    x, eps_x, eps_w = _spread_components(model, 7, seed=2)
    base = model.loss(x, eps_x, eps_w)
    t = model.elbo_terms(x, eps_x, eps_w)
    with torch.no_grad():
        pbar = sum(_bayes_rule(model, t["_x"][m, i], t["_w"][m, i]) for m in range(3) for i in range(7)) / 21
    ref = (pbar * (pbar * 5).log()).sum().item()
    assert ref > 1e-3
    assert base["usage_kl"].item() == pytest.approx(ref, rel=1e-6)  # log π is a float32-born buffer
    model.config.usage_weight = 2.0
    out = model.loss(x, eps_x, eps_w)
    assert out["loss"].item() == pytest.approx(base["loss"].item() + 2.0 * base["usage_kl"].item(), rel=1e-12)
    # its gradient moves p̄ towards uniform: one small step on the prior net lowers usage_kl
    model.zero_grad()
    model.config.usage_weight = 0.0
    (out["loss"] - model.loss(x, eps_x, eps_w)["loss"]).backward()  # = γ·usage_kl, with its graph
    with torch.no_grad():
        for p in model.prior_net.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad
    assert model.loss(x, eps_x, eps_w)["usage_kl"].item() < ref


# --- training, shapes, vectorisation ------------------------------------------------------------------------------

def test_loss_decreases_on_tiny_synthetic_problem():
    torch.manual_seed(0)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    x = (centres[torch.randint(3, (300,))] + 0.3 * torch.randn(300, 2))
    model = create_model("gmvae", (2,), architecture="synthetic", latent_dim=2, w_dim=2, num_components=3,
                         hidden=32, learn_obs_var=True, mc_samples=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    eps = (torch.randn(2, 300, 2), torch.randn(2, 300, 2))
    with torch.no_grad():
        before = model.loss(x, *eps)["loss"].item()
    for step in range(30):
        idx = torch.randint(300, (100,))
        out = model.loss(x[idx])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        assert torch.isfinite(out["loss"])
    with torch.no_grad():
        after = model.loss(x, *eps)["loss"].item()
    assert after < before - 0.5


@pytest.mark.parametrize("arch,shape", [("mnist", (1, 28, 28)), ("svhn", (3, 32, 32)), ("synthetic", (2,)),
                                        ("auto", (1, 28, 28)), ("auto", (3, 32, 32))])
def test_shapes(arch, shape):
    torch.manual_seed(0)
    model = create_model("gmvae", shape, architecture=arch, latent_dim=4, w_dim=3, num_components=5, width=0.0625,
                         mc_samples=2)
    if arch == "auto":
        assert model.arch == ("mnist" if shape[1] == 28 else "svhn")
    x = torch.rand(6, *shape)
    out = model.loss(x)
    out["loss"].backward()
    assert all(v.shape == () for v in out.values())
    model.eval()
    with torch.no_grad():
        assert model.encode(x).shape == (6, 4)
        assert model.decode(torch.randn(7, 4)).shape == (7, *shape)
        assert model.reconstruct(x).shape == x.shape
        assert model.sample(5).shape == (5, *shape)
        p = model.cluster_probs(x)
        assert p.shape == (6, 5) and torch.allclose(p.sum(-1), torch.ones(6))
        assert torch.equal(model.cluster_probs(x), p)  # deterministic (posterior means)
        z, wts, grp = model.posterior_samples(x)
        assert z.shape == (6, 3) and wts is None and grp is None and model.prior.dim == 3
        g = torch.Generator().manual_seed(0)
        s = model.sample_component(2, 4, 0.5, generator=g)
        assert s.shape == (4, *shape)
        s0 = model.sample_component(2, 4, std_scale=0.0, w_zero=True)
        assert torch.allclose(s0, model.sample_component_mean(2).expand_as(s0), atol=1e-6)
        assert model.traverse_w(1, 3).shape == (9, *shape)
        assert model.traverse_w(1, 4, dims=(2,)).shape == (4, *shape)
        m = model.eval_metrics(x)
        assert set(m) == {"elbo", "recon_nll", "cond_prior_kl", "w_prior_kl", "z_prior_kl"}
        assert torch.isfinite(model.prior_mmd(z))
        if shape[0] != 2 and len(shape) == 3:
            assert ((model.sample(3) >= 0) & (model.sample(3) <= 1)).all()
    with pytest.raises(ConfigError, match="component"):
        model.sample_component(5, 1)


def test_one_forward_of_beta_and_decoder_for_all_components_and_samples():
    model = tiny(num_components=7, mc_samples=5)
    calls = {"beta": 0, "dec": 0}
    model.prior_net.register_forward_hook(lambda *a: calls.__setitem__("beta", calls["beta"] + 1))
    model.decoder.register_forward_hook(lambda *a: calls.__setitem__("dec", calls["dec"] + 1))
    t = model.elbo_terms(torch.randn(4, 2).double())
    assert calls == {"beta": 1, "dec": 1}
    assert t["_pz"].shape == (5, 4, 7) and t["_mu_k"].shape == (5, 4, 7, 3)


def test_presets_and_registry():
    for name, arch in [("gmvae-mnist", "mnist"), ("gmvae-synthetic", "synthetic"), ("gmvae-svhn", "svhn")]:
        cfg = RunConfig.from_dict(load_preset(name)).validate()
        assert cfg.model == "gmvae" and isinstance(cfg.model_config, GMVAEConfig)
        mc = cfg.model_config
        assert mc.architecture == arch
        assert cfg.train.lr == 1e-4 and tuple(cfg.train.betas) == (0.9, 0.999)  # Adam's eps: its default 1e-8
        shape = {"mnist": (1, 28, 28), "svhn": (3, 32, 32), "synthetic": (2,)}[arch]
        model = create_model("gmvae", shape, replace(mc, width=min(mc.width, 0.05)))
        assert model.has_discrete_latent and model.num_components == mc.num_components
    syn = RunConfig.from_dict(load_preset("gmvae-synthetic")).model_config
    assert syn.min_info_lambda > 0 and syn.latent_dim == 2 and syn.w_dim == 2 and syn.likelihood == "gaussian"
    mn = RunConfig.from_dict(load_preset("gmvae-mnist")).model_config
    assert mn.min_info_lambda == 0 and mn.latent_dim == 200 and mn.w_dim == 150


@pytest.mark.parametrize("kw,msg", [
    (dict(likelihood="poisson"), "likelihood"),
    (dict(architecture="mnist"), "image"),
    (dict(num_components=4, min_info_lambda=2.0), "log K"),
    (dict(min_info_lambda=-1.0), "min_info_lambda"),
    (dict(learn_obs_var=True, likelihood="bernoulli"), "learn_obs_var"),
    (dict(mc_samples=0), "mc_samples"),
    (dict(min_info_reduction="sum"), "min_info_reduction"),
    (dict(posterior_grad="flipped"), "posterior_grad"),
    (dict(usage_weight=-0.5), "usage_weight"),
])
def test_config_errors(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        create_model("gmvae", (2,), **{**TINY, **kw})


def test_image_too_small_for_conv_architecture():
    with pytest.raises(ConfigError, match="too small"):
        create_model("gmvae", (1, 8, 8), architecture="mnist")
