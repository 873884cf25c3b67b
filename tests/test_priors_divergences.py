"""Priors and divergences against independent references (brute force, closed form, Monte Carlo)."""
import math

import numpy as np
import pytest
import torch

from wae.divergences import (
    IMQKernel,
    RBFKernel,
    critic_loss,
    encoder_adversarial_loss,
    kl_categorical,
    kl_normal_normal,
    kl_normal_std,
    mmd,
    mmd_brute_force,
    moment_matching_loss,
    sq_dists,
)
from wae.errors import ConfigError
from wae.priors import GaussianMixturePrior, GaussianPrior, build_prior, simplex_means


@pytest.mark.parametrize("k,d", [(2, 1), (3, 2), (10, 10), (10, 9), (5, 20)])
def test_simplex_means_equidistant_and_centred(k, d):
    m = simplex_means(k, d, 4.0).double()
    dist = torch.cdist(m, m)
    off = dist[~torch.eye(k, dtype=bool)]
    assert torch.allclose(off, torch.full_like(off, 4.0), atol=1e-6)
    assert m.mean(0).abs().max() < 1e-6


def test_simplex_needs_enough_dimensions():
    with pytest.raises(ConfigError, match="dim"):
        simplex_means(10, 8, 4.0)


def test_mixture_log_prob_matches_torch_distributions():
    p = GaussianMixturePrior(dim=3, num_components=4, std=0.7, separation=4.0)
    z = torch.randn(50, 3) * 2
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=p.weights),
        torch.distributions.Independent(torch.distributions.Normal(p.means, 0.7), 1),
    )
    assert torch.allclose(p.log_prob(z), mix.log_prob(z), atol=1e-5)


def test_gaussian_prior_log_prob_and_moments():
    p = GaussianPrior(5, std=2.0)
    z = torch.randn(10, 5)
    ref = torch.distributions.Normal(0.0, 2.0).log_prob(z).sum(-1)
    assert torch.allclose(p.log_prob(z), ref, atol=1e-5)
    torch.manual_seed(0)
    s = p.sample((20000,))
    assert s.shape == (20000, 5)
    assert abs(float(s.var(0).mean()) - 4.0) < 0.1
    assert p.expected_sq_dist() == pytest.approx(2 * 5 * 4.0)


def test_mixture_sampling_moments_and_expected_distance():
    torch.manual_seed(0)
    p = GaussianMixturePrior(dim=4, num_components=5, std=0.5, separation=4.0)
    z, k = p.sample_with_components((40000,))
    assert torch.allclose(z.mean(0), p.mean, atol=0.03)
    assert torch.allclose(z.var(0), p.variance, atol=0.05)
    # per-component samples come from the right component
    assert torch.allclose((z[k == 2] - p.means[2]).std(0), torch.full((4,), 0.5), atol=0.03)
    a, b = z[:20000], z[20000:]
    assert float((a - b).pow(2).sum(1).mean()) == pytest.approx(p.expected_sq_dist(), rel=0.03)
    zs, w, g = p.sample_stratified(7)
    assert zs.shape == (35, 4) and torch.isclose(w.sum(), torch.tensor(1.0)) and len(set(g.tolist())) == 7


def test_build_prior_registry():
    assert isinstance(build_prior("gaussian", 3), GaussianPrior)
    assert build_prior("mixture", 4, num_components=3).num_components == 3
    with pytest.raises(ConfigError, match="unknown prior"):
        build_prior("nope", 3)


def test_sq_dists_against_loop():
    a, b = torch.randn(7, 5), torch.randn(4, 5)
    ref = torch.tensor([[float(((a[i] - b[j]) ** 2).sum()) for j in range(4)] for i in range(7)])
    assert torch.allclose(sq_dists(a, b), ref, atol=1e-5)


def _kfn(kernel):
    return lambda u, v: float(kernel(u[None], v[None]))


@pytest.mark.parametrize("kernel", [IMQKernel(base=2.0), RBFKernel(base=3.0, scales=(0.5, 2.0))])
def test_mmd_unweighted_equals_brute_force_u_statistic(kernel):
    torch.manual_seed(1)
    x, y = torch.randn(9, 3).double(), (torch.randn(6, 3) + 0.5).double()
    # Algorithm 2 by hand: 1/(n(n-1)) Σ_{l≠j} k(x_l,x_j) + 1/(m(m-1)) Σ k(y,y) − 2/(nm) Σ k(x,y)
    n, m = len(x), len(y)
    kf = _kfn(kernel)
    ref = (sum(kf(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
           + sum(kf(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
           - 2 * sum(kf(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m))
    assert float(mmd(x, y, kernel)) == pytest.approx(ref, abs=1e-9)


def test_weighted_grouped_mmd_against_brute_force():
    torch.manual_seed(2)
    kernel = IMQKernel(base=5.0)
    n, K = 5, 3
    x = torch.randn(n * K, 2).double()
    q = torch.softmax(torch.randn(n, K), -1).double()
    wx = (q / n).reshape(-1)
    gx = torch.arange(n).repeat_interleave(K)
    p = GaussianMixturePrior(2, num_components=3, std=1.0)
    y, wy, gy = p.sample_stratified(4)
    y, wy = y.double(), wy.double()
    ours = float(mmd(x, y, kernel, wx, wy, gx, gy))
    ref = mmd_brute_force(x, y, _kfn(kernel), wx, wy, gx, gy)
    assert ours == pytest.approx(ref, abs=1e-9)
    # group sizes given as ints (consecutive runs) are the same groups
    assert float(mmd(x, y, kernel, wx, wy, K, 3)) == pytest.approx(ref, abs=1e-9)
    # a non-contiguous layout goes through the general masked path and still matches brute force
    perm = torch.randperm(n * K)
    ref_p = mmd_brute_force(x[perm], y, _kfn(kernel), wx[perm], wy, gx[perm], gy)
    assert float(mmd(x[perm], y, kernel, wx[perm], wy, gx[perm], gy)) == pytest.approx(ref_p, abs=1e-9)
    with pytest.raises(ValueError, match="group size"):
        mmd(x, y, kernel, wx, wy, 4, gy)


def test_weighted_equals_unweighted_for_equal_weights():
    torch.manual_seed(3)
    x, y = torch.randn(12, 4), torch.randn(10, 4)
    k = IMQKernel(base=8.0)
    a = mmd(x, y, k)
    b = mmd(x, y, k, torch.full((12,), 1 / 12), torch.full((10,), 1 / 10))
    assert torch.allclose(a, b, atol=1e-6)


def test_mixture_mmd_is_unbiased_for_the_expected_kernel():
    """E over prior draws of the grouped within-sum equals E_{z,z'~p} k(z,z') (checked by Monte Carlo)."""
    torch.manual_seed(4)
    p = GaussianMixturePrior(2, num_components=3, std=0.5, separation=4.0)
    k = IMQKernel(base=1.0)
    # reference: E k(z,z') with z,z' independent from the mixture, large sample
    a, b = p.sample((200000,)), p.sample((200000,))
    ref = float(k.from_sq_dists((a - b).pow(2).sum(1)).mean())
    from wae.divergences import _within_sum

    vals = []
    for _ in range(400):
        z, w, g = p.sample_stratified(3)
        s, nrm = _within_sum(k(z, z), w, g)
        vals.append(float(s / nrm))
    assert np.mean(vals) == pytest.approx(ref, rel=0.02)


def test_mmd_properties_near_zero_and_grows_with_shift():
    torch.manual_seed(5)
    k = IMQKernel(base=2 * 4.0)
    same = [float(mmd(torch.randn(200, 4), torch.randn(200, 4), k)) for _ in range(20)]
    assert abs(np.mean(same)) < 3 * np.std(same) / math.sqrt(20) + 1e-3
    vals = [float(mmd(torch.randn(200, 4) + s, torch.randn(200, 4), k)) for s in (0.5, 1.0, 2.0)]
    assert vals[0] < vals[1] < vals[2] and vals[0] > 0.01


def test_imq_fused_and_looped_paths_agree():
    d2 = torch.rand(50, 60) * 10
    k = IMQKernel(base=1.5)
    ref = sum(c * 1.5 / (c * 1.5 + d2) for c in k.scales)
    assert torch.allclose(k.from_sq_dists(d2), ref, atol=1e-5)


def test_kl_normal_closed_forms_against_torch():
    mu1, lv1, mu2, lv2 = torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 3)
    q = torch.distributions.Normal(mu1, (0.5 * lv1).exp())
    p = torch.distributions.Normal(mu2, (0.5 * lv2).exp())
    assert torch.allclose(kl_normal_normal(mu1, lv1, mu2, lv2), torch.distributions.kl_divergence(q, p).sum(-1),
                          atol=1e-5)
    p0 = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    assert torch.allclose(kl_normal_std(mu1, lv1), torch.distributions.kl_divergence(q, p0).sum(-1), atol=1e-5)


def test_kl_categorical_against_torch():
    q = torch.softmax(torch.randn(5, 4), -1)
    logp = torch.log_softmax(torch.randn(4), -1)
    ref = torch.distributions.kl_divergence(torch.distributions.Categorical(probs=q),
                                            torch.distributions.Categorical(logits=logp.expand(5, 4)))
    assert torch.allclose(kl_categorical(q, logp), ref, atol=1e-6)


def test_critic_losses_match_algorithm_1():
    critic = lambda z: z.sum(-1)  # logits
    zp, zq = torch.randn(8, 2), torch.randn(8, 2)
    D = lambda z: torch.sigmoid(critic(z))
    ref_c = -10 * (torch.log(D(zp)) + torch.log(1 - D(zq))).mean()
    assert torch.allclose(critic_loss(critic, zp, zq, 10.0), ref_c, atol=1e-5)
    assert torch.allclose(encoder_adversarial_loss(critic, zq, 10.0), -10 * torch.log(D(zq)).mean(), atol=1e-5)


def test_moment_matching_loss_zero_for_identical_and_positive_otherwise():
    z = torch.randn(100, 3)
    assert float(moment_matching_loss(z, z)) == pytest.approx(0.0, abs=1e-10)
    assert float(moment_matching_loss(z * 3 + 1, z)) > 1.0


def test_grouped_mmd_fast_path_equals_general_path():
    """Contiguous equal-size groups take a block-diagonal fast path; shuffled groups the general masked path."""
    torch.manual_seed(6)
    k = IMQKernel(base=3.0)
    n, K = 6, 4
    x = torch.randn(n * K, 3).double()
    w = torch.softmax(torch.randn(n * K), 0).double()
    g = torch.arange(n).repeat_interleave(K)
    y = torch.randn(10, 3).double()
    fast = mmd(x, y, k, w, None, g, None)
    perm = torch.randperm(n * K)
    general = mmd(x[perm], y, k, w[perm], None, g[perm], None)
    ref = mmd_brute_force(x, y, _kfn(k), w, None, g, None)
    assert float(fast) == pytest.approx(ref, abs=1e-10)
    assert float(general) == pytest.approx(ref, abs=1e-10)
    # unequal group sizes fall back to the general path
    g2 = torch.tensor([0, 0, 0, 1, 1, 2] * 4)
    assert float(mmd(x, y, k, w, None, g2, None)) == pytest.approx(mmd_brute_force(x, y, _kfn(k), w, None, g2, None),
                                                                    abs=1e-10)


def test_imq_sum_fused_value_and_gradient_match_the_plain_formula():
    from wae.divergences import IMQKernel, _IMQSum

    torch.manual_seed(0)
    kern = IMQKernel(base=3.0)
    c = torch.tensor([s * 3.0 for s in kern.scales], dtype=torch.float64)
    d2 = (torch.rand(37, 23, dtype=torch.float64) * 10).requires_grad_(True)
    plain = (c / (c + d2.unsqueeze(-1))).sum(-1)
    old_block = _IMQSum.BLOCK
    try:
        _IMQSum.BLOCK = 7 * 23 * 5  # several row blocks, the last one partial
        fused = kern.from_sq_dists(d2)
        assert torch.allclose(fused, plain, atol=1e-12)
        g = torch.randn_like(plain)
        (gf,) = torch.autograd.grad((fused * g).sum(), d2)
        (gp,) = torch.autograd.grad((plain * g).sum(), d2)
        assert torch.allclose(gf, gp, atol=1e-12)
        assert torch.autograd.gradcheck(lambda t: kern.from_sq_dists(t), (d2[:4, :5].detach().requires_grad_(),))
    finally:
        _IMQSum.BLOCK = old_block
    with torch.no_grad():  # no derivative buffer without grad; same values
        assert torch.allclose(kern.from_sq_dists(d2), plain)
