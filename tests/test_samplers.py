"""The GMM sampler (ex-post density estimation on a model's codes) against scikit-learn and scipy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from wae.errors import ConfigError
from wae.samplers import GaussianMixtureSampler, draw, encode_all


def _codes(n=600, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.multivariate_normal([0, 0, 0], [[1, 0.5, 0], [0.5, 1, 0], [0, 0, 0.3]], n // 2)
    b = rng.multivariate_normal([5, -3, 1], [[0.5, 0, 0.1], [0, 2, 0], [0.1, 0, 1]], n - n // 2)
    return np.concatenate([a, b])


def test_fitted_mixture_log_likelihood_equals_sklearn_and_scipy():
    from sklearn.mixture import GaussianMixture

    z = _codes()
    gmm = GaussianMixtureSampler.fit(z, n_components=2, seed=3)
    ref = GaussianMixture(2, covariance_type="full", random_state=3, max_iter=500, reg_covar=1e-6).fit(z)
    ours = gmm.log_prob(torch.as_tensor(z)).numpy()
    np.testing.assert_allclose(ours, ref.score_samples(z), rtol=1e-10, atol=1e-10)
    assert float(ours.mean()) == pytest.approx(ref.score(z), rel=1e-12)
    # an independent reference for the densities themselves: scipy's multivariate normal
    w, mu, cov = gmm.weights.numpy(), gmm.means.numpy(), (gmm.scale_tril @ gmm.scale_tril.transpose(1, 2)).numpy()
    by_hand = np.log(sum(w[k] * multivariate_normal(mu[k], cov[k]).pdf(z[:20]) for k in range(2)))
    np.testing.assert_allclose(ours[:20], by_hand, rtol=1e-9)
    np.testing.assert_allclose(gmm.predict_proba(torch.as_tensor(z)).numpy(), ref.predict_proba(z), atol=1e-9)


def test_samples_follow_the_mixture_and_its_components():
    gmm = GaussianMixtureSampler.fit(_codes(2000, 1), n_components=2, seed=0)
    g = torch.Generator().manual_seed(0)
    s = gmm.sample(100_000, generator=g)
    mean = (gmm.weights.unsqueeze(1) * gmm.means).sum(0)
    assert torch.allclose(s.mean(0), mean, atol=0.03)
    for k in range(2):
        sk = gmm.sample_component(k, 50_000, generator=g)
        cov = gmm.scale_tril[k] @ gmm.scale_tril[k].T
        assert torch.allclose(sk.mean(0), gmm.means[k], atol=0.03)
        assert torch.allclose(torch.cov(sk.T), cov, atol=0.05)
        assert float((gmm.predict_proba(sk).argmax(1) == k).double().mean()) > 0.99
    half = gmm.sample_component(0, 50_000, std_scale=0.5, generator=g)
    assert torch.allclose(torch.cov(half.T), 0.25 * gmm.scale_tril[0] @ gmm.scale_tril[0].T, atol=0.03)
    with pytest.raises(ConfigError, match="out of range"):
        gmm.sample_component(2, 3)
    with pytest.raises(ConfigError, match="components"):
        GaussianMixtureSampler.fit(np.zeros((3, 2)), n_components=4)


@pytest.mark.parametrize("name", ["wae-mmd", "stacked-wae", "gmvae", "gm-wae"])
def test_gmm_sampler_decodes_draws_of_any_continuous_latent_model(name):
    from wae.models import create_model

    torch.manual_seed(0)
    kw = {"stacked-wae": {}, "gmvae": dict(latent_dim=3, w_dim=2, num_components=3),
          "gm-wae": dict(latent_dim=4, num_components=3)}.get(name, dict(latent_dim=4))
    m = create_model(name, (6,), **kw).eval()
    x = torch.randn(200, 6)
    codes = encode_all(m, x)
    gmm = GaussianMixtureSampler.fit(codes, n_components=3, seed=0)
    out = draw("gmm", m, 16, gmm=gmm, generator=torch.Generator().manual_seed(1))
    assert out.shape == (16, 6) and torch.isfinite(out).all()
    again = draw("gmm", m, 16, gmm=gmm, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    one = draw("gmm", m, 5, component=2, gmm=gmm)
    assert one.shape == (5, 6)


def test_wae_sample_with_the_gmm_sampler_on_a_trained_wae(tmp_path):
    """`wae sample RUN --sampler gmm`: a mixture fitted to the run's training codes, decoded; --component picks one
    of its components; deterministic per seed."""
    from wae.cli import main

    run = tmp_path / "run"
    assert main(["train", "wae-mmd", "--dataset", "mnist-5k", "--out", str(run), "--set", "width=0.0625",
                 "--set", "data.limit=300", "--set", "data.eval_limit=100", "--set", "max_steps=4",
                 "--set", "pretrain_steps=0", "--set", "figures=false", "--set", "train.sample_metrics=[]",
                 "--quiet"]) == 0
    outs = []
    for i, extra in enumerate(([], [], ["--component", "2"])):
        f = tmp_path / f"s{i}.npz"
        assert main(["sample", str(run), "--sampler", "gmm", "--gmm-components", "4", "--n", "20", "--seed", "1",
                     "--out", str(f), *extra]) == 0
        outs.append(np.load(f)["x"])
    assert outs[0].shape == (20, 1, 28, 28) and np.isfinite(outs[0]).all()
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    assert main(["sample", str(run), "--sampler", "gmm", "--gmm-components", "4", "--component", "9", "--n", "2",
                 "--out", str(tmp_path / "x.npz")]) == 2  # no such component: one line, exit 2


# --- one sampling path (issue 34, item 2) -------------------------------------------------------------------------


def _refitted_estimator():
    """A GM-WAE with ``component_refit`` whose refitted components sit far from the prior's modes (so that a draw
    from the prior and one from the refitted component cannot agree), wrapped as a fitted estimator (vectors,
    identity input map)."""
    from wae.estimator import GMWAEClustering
    from wae.models import create_model

    torch.manual_seed(0)
    model = create_model("gm-wae", (6,), latent_dim=3, num_components=3, width=0.05, component_refit=True).eval()
    with torch.no_grad():
        model.refit_means.copy_(model.prior.means + 7.0)
        model.refit_tril.copy_(torch.eye(3).repeat(3, 1, 1) * 0.1)
        model.refit_weights.copy_(torch.tensor([0.7, 0.2, 0.1]))
    est = GMWAEClustering(3)
    est.model_, est.layout_, est.input_shape_ = model, "vector", (6,)
    est.offset_, est.scale_, est.n_features_in_ = np.zeros(6), np.ones(6), 6
    return est, model


@pytest.mark.parametrize("cluster", [None, 0, 2])
def test_estimator_wae_sample_and_gallery_draw_from_the_same_refitted_components(cluster):
    """The estimator's ``sample`` (before: from the prior's component), ``wae sample``'s sampler and the model's
    ``sample_component`` / ``sample`` (the cluster gallery, the run's figures) give the same draws for one seed, and
    those are decodes of the refitted Gaussians."""
    from wae.plots.clusters import gallery_parts

    est, model = _refitted_estimator()
    ours = est.sample(5, cluster=cluster, random_state=11)
    cli = draw("prior", model, 5, cluster, generator=torch.Generator().manual_seed(11)).numpy()
    np.testing.assert_allclose(ours, cli, rtol=1e-6, atol=1e-6)
    direct = (model.sample(5, torch.Generator().manual_seed(11)) if cluster is None else
              model.sample_component(cluster, 5, generator=torch.Generator().manual_seed(11)))
    np.testing.assert_allclose(ours, direct.detach().numpy(), rtol=1e-6, atol=1e-6)
    # by hand: the refitted component's mean + its Cholesky factor × the same normal draws
    g = torch.Generator().manual_seed(11)
    k = torch.full((5,), cluster) if cluster is not None else \
        torch.multinomial(model.refit_weights, 5, replacement=True, generator=g)
    z = model.refit_means[k] + torch.einsum("nij,nj->ni", model.refit_tril[k], torch.randn(5, 3, generator=g))
    with torch.no_grad():
        np.testing.assert_allclose(ours, model.decode(z).numpy(), rtol=1e-6, atol=1e-6)
        prior_z = model.prior.sample_component(cluster or 0, 5, generator=torch.Generator().manual_seed(11))
        assert not np.allclose(ours, model.decode(prior_z).numpy(), atol=1e-3)  # the prior's draw differs
    if cluster is not None:  # the gallery's decoded mode is the refitted mean's, its samples the same component's
        probs = np.full((4, 3), 1 / 3)
        with torch.no_grad():
            mode, _, _, samples = gallery_parts(est.model_, torch.zeros(4, 6), probs, cluster, torch.Generator())
            np.testing.assert_allclose(mode.numpy(), model.decode(model.refit_means[cluster: cluster + 1]).numpy(),
                                       rtol=1e-6)
            assert samples.shape == (8, 6)


def test_gmvae_sampling_with_a_scaled_spread_takes_its_own_generative_path():
    """``wae sample --std-scale`` without a component decoded the prior over w as if it were x (a shape error, or
    noise when the sizes agree); now GMVAE's codes are its ancestral x, as ``sample`` draws them."""
    from wae.models import create_model

    torch.manual_seed(0)
    m = create_model("gmvae", (1, 28, 28), architecture="mnist", latent_dim=6, w_dim=4, num_components=3,
                     width=0.0625).eval()
    with torch.no_grad():
        s = draw("prior", m, 4, None, std_scale=0.5, generator=torch.Generator().manual_seed(1))
        assert s.shape == (4, 1, 28, 28) and torch.isfinite(s).all()
        a = m.sample(4, torch.Generator().manual_seed(2))
        b = m.decode(m.sample_codes(4, generator=torch.Generator().manual_seed(2)))
        assert torch.equal(a, b)
        c = m.sample_component(1, 3, generator=torch.Generator().manual_seed(3))
        assert torch.equal(c, m.decode(m.sample_codes(3, 1, generator=torch.Generator().manual_seed(3))))
        assert torch.equal(m.decode(m.component_mode(2)), m.sample_component_mean(2))
