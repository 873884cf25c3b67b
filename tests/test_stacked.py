"""StackedWAE / wae-deep: Eq. 10 terms against Monte Carlo references, Appendix B weights, Eq. 12, shapes."""
import math

import pytest
import torch

from wae.config import RunConfig, load_preset
from wae.divergences import mmd, mmd_brute_force
from wae.errors import ConfigError
from wae.io import load_model, save_model
from wae.models import create_model
from wae.models.stacked import layer_weights, sweep_grid

DIMS = [4, 3, 2]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets: one intra-op thread is fastest and avoids OpenMP stalls on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(name="stacked-wae", **kw):
    torch.manual_seed(0)
    args = dict(latent_dims=DIMS, hidden_units=[8, 8, 8], architecture="mlp", lambda_rec=0.5, lambda_match=0.3)
    args.update(kw)
    return create_model(name, (6,), **args).double().eval()


def _perturb_logvars(m):
    """Make the log-variances clearly non-zero (both signs) so variance terms and |log Σ| matter."""
    with torch.no_grad():
        for net, b in zip(list(m.encoders) + list(m.decoders[1:]), [-1.0, 0.7, -0.4, 0.5, -0.8]):
            net.logvar_head.bias.add_(b)


def _replay_chain(m, x, seed):
    """Re-draw the encoder noise of loss() (one randn per layer, in order) and rebuild the chain by hand."""
    torch.manual_seed(seed)
    eps = [torch.randn(x.shape[0], d, dtype=torch.float64) for d in DIMS]
    zs, lvs, z = [], [], x
    for i in range(1, len(DIMS) + 1):
        mu, lv = m.q_params(i, z)
        z = mu + (0.5 * lv).exp() * eps[i - 1]
        zs.append(z)
        lvs.append(lv)
    return zs, lvs


# --- Appendix B ----------------------------------------------------------------------------------------------


def test_layer_weights_follow_appendix_b():
    # B.1: prod_{i<=n} lambda_i = lambda_rec^n / d_n (n = 1..4), lambda_match at n = 5; (0.05, 1e-4), 32/16/8/4/2
    mnist = [1.0, 0.05 / 32, 0.0025 / 16, 0.000125 / 8, 0.00000625 / 4, 1e-4]
    assert layer_weights(0.05, 1e-4, 5, [32, 16, 8, 4, 2], "mnist") == pytest.approx(mnist, rel=1e-12)
    assert layer_weights(0.05, 1e-4, 5) == pytest.approx([1.0, 1.5625e-3, 1.5625e-4, 1.5625e-5, 1.5625e-6, 1e-4])
    # B.2: prod_{i<=p} lambda_i = lambda_rec^((p-1)/2 + 1) (p = 1..5), lambda_match at p = 6; (0.1, 1e-4)
    svhn = [1.0, 0.1, 0.1 * math.sqrt(0.1), 0.01, 0.01 * math.sqrt(0.1), 0.001, 1e-4]
    assert layer_weights(0.1, 1e-4, 6, schedule="svhn") == pytest.approx(svhn, rel=1e-12)
    assert layer_weights(0.3, 0.2, 1, [7]) == [1.0, 0.2]
    with pytest.raises(ConfigError):
        layer_weights(0.1, 1e-4, 3)  # the mnist schedule needs d_n when N != 5
    m = create_model("stacked-wae", (1, 28, 28), width=0.02)
    assert m.weights == pytest.approx(mnist, rel=1e-12)


def test_sweep_grid_is_the_25_pairs_of_b1():
    g = sweep_grid()
    assert len(g) == 25 == len(set(g))
    assert {r for r, _ in g} == {0.01, 0.05, 0.1, 0.5, 1.0}
    assert {m for _, m in g} == {1e-4, 1e-3, 1e-2, 1e-1, 1.0}
    assert (0.05, 1e-4) in g


# --- Eq. 10 --------------------------------------------------------------------------------------------------


def test_eq10_terms_against_monte_carlo_reference():
    m = _tiny(logvar_penalty=[0.1, 0.02, 0.003])
    _perturb_logvars(m)
    x = torch.randn(5, 6, dtype=torch.float64)
    torch.manual_seed(11)
    with torch.no_grad():
        t = m.loss(x)
        zs, lvs = _replay_chain(m, x, 11)
        torch.manual_seed(11)
        for d in DIMS:
            torch.randn(x.shape[0], d, dtype=torch.float64)
        zp = torch.randn(x.shape[0], DIMS[-1]).double()  # GaussianPrior.rsample: the next draw
        # cost0: deterministic decoder, one chain sample per example
        ref0 = sum(float(((x[b] - m.decode_logits(zs[0][b:b + 1])[0]) ** 2).sum()) for b in range(5)) / 5
        assert float(t["cost0"]) == pytest.approx(ref0, rel=1e-10)
        # cost_n = E_{z~ ~ p(z_n|z_{n+1})} ||z_n - z~||^2: Monte Carlo with many z~ per example
        g = torch.Generator().manual_seed(5)
        for n in (1, 2):
            mu, lv = m.p_params(n + 1, zs[n])
            assert float(lv.abs().min()) > 0.1
            zt = mu + (0.5 * lv).exp() * torch.randn(40000, *mu.shape, generator=g, dtype=torch.float64)
            ref = float(((zs[n - 1] - zt) ** 2).sum(-1).mean())
            assert float(t[f"cost{n}"]) == pytest.approx(ref, rel=0.01)
        # top MMD between the encoded z_N and the prior draws, unbiased U-statistic
        kf = lambda a, b: float(m.kernel(a[None], b[None]))
        assert float(t["mmd"]) == pytest.approx(mmd_brute_force(zs[-1], zp, kf), rel=1e-9, abs=1e-12)
        assert m.kernel.base == pytest.approx(2 * DIMS[-1])
        # Eq. 12 by hand and the weighted total
        pen = sum(w * float(lv.abs().sum(-1).mean()) for w, lv in zip([0.1, 0.02, 0.003], lvs))
        assert float(t["logvar_penalty"]) == pytest.approx(pen, rel=1e-10)
        w = layer_weights(0.5, 0.3, 3, DIMS)
        total = w[0] * t["cost0"] + w[1] * t["cost1"] + w[2] * t["cost2"] + w[3] * t["mmd"] + pen
        assert float(t["loss"]) == pytest.approx(float(total), rel=1e-10)
    assert set(t) == {"loss", "cost0", "cost1", "cost2", "mmd", "logvar_penalty"}


def test_closed_form_expectation_equals_sampled_one():
    m = _tiny()
    _perturb_logvars(m)
    mc = _tiny(cost_expectation="mc", mc_samples=20000)
    mc.load_state_dict(m.state_dict())
    x = torch.randn(6, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(3)
        a = m.loss(x)
        torch.manual_seed(3)  # same encoder noise, so the same chain; then 20,000 z~ per example
        b = mc.loss(x)
    assert float(b["cost0"]) == pytest.approx(float(a["cost0"]), rel=1e-12)
    for n in (1, 2):
        assert float(b[f"cost{n}"]) == pytest.approx(float(a[f"cost{n}"]), rel=0.01)


def test_logvar_penalty_hand_formula():
    m = _tiny(logvar_penalty=[1.0, 0.5, 0.25])
    _perturb_logvars(m)
    x = torch.randn(4, 6, dtype=torch.float64)
    with torch.no_grad():
        _, lvs = _replay_chain(m, x, 0)
    hand = 0.0
    for w, lv in zip([1.0, 0.5, 0.25], lvs):
        hand += w * sum(abs(float(v)) for v in lv.detach().flatten()) / x.shape[0]
    assert float(m.logvar_penalty_term(lvs)) == pytest.approx(hand, rel=1e-12)
    assert float(_tiny().logvar_penalty_term(lvs)) == 0.0  # no weights: B.1's objective
    with pytest.raises(ConfigError, match="logvar_penalty"):
        _tiny(logvar_penalty=[1.0])


def test_gen_variance_fit_keeps_eq10_and_trains_sigma_p_by_likelihood():
    """gen_variance='fit': Eq. 10's terms are unchanged, gen_nll is the Gaussian NLL by hand, and the Σ^p nets get
    their gradient from the likelihood only, while μ^p nets and the decoder get exactly Eq. 10's."""
    m = _tiny()
    _perturb_logvars(m)
    f = _tiny(gen_variance="fit")
    f.load_state_dict(m.state_dict())
    x = torch.randn(5, 6, dtype=torch.float64)
    torch.manual_seed(4)
    a = m.loss(x)
    torch.manual_seed(4)
    b = f.loss(x)
    for k in ("cost0", "cost1", "cost2", "mmd"):
        assert b[k].item() == pytest.approx(a[k].item(), rel=1e-12)
    zs, _ = _replay_chain(f, x, 4)
    w = layer_weights(0.5, 0.3, 3, DIMS)
    hand, weighted = 0.0, 0.0
    for n in (1, 2):
        mu, lv = f.p_params(n + 1, zs[n])
        v = lv.exp()
        nll = float(sum(0.5 * (math.log(2 * math.pi * float(v[b_, j])) + float((zs[n - 1][b_, j] - mu[b_, j]) ** 2) /
                               float(v[b_, j])) for b_ in range(5) for j in range(DIMS[n - 1]))) / 5
        hand += nll
        weighted += w[n] * nll
    assert float(b["gen_nll"]) == pytest.approx(hand, rel=1e-10)
    assert float(b["loss"]) == pytest.approx(float(_eq10(b, w) + b["logvar_penalty"]) + weighted, rel=1e-10)
    assert "gen_nll" not in a
    # gradients: μ^p nets and the data decoder as in Eq. 10; Σ^p nets from the likelihood alone
    m.zero_grad()
    f.zero_grad()
    a["loss"].backward()
    b["loss"].backward()
    for dm, df in zip(m.decoders, f.decoders):
        for (name, pm), (_, pf) in zip(dm.named_parameters(), df.named_parameters()):
            if not name.startswith("logvar"):
                assert torch.allclose(pm.grad, pf.grad, rtol=1e-10, atol=1e-14), name
    f.zero_grad()
    zs = [z.detach() for z in zs]
    only_nll = sum(w[n] * f.latent_cost(n + 1, zs[n - 1], zs[n], with_nll=True)[1].mean() for n in (1, 2))
    only_nll.backward()
    ref = {k: p.grad.clone() for k, p in f.named_parameters() if "decoders" in k and "logvar" in k}
    f.zero_grad()
    torch.manual_seed(4)
    f.loss(x)["loss"].backward()
    for k, g in ref.items():
        assert torch.allclose(dict(f.named_parameters())[k].grad, g, rtol=1e-10, atol=1e-14), k
    with pytest.raises(ConfigError, match="gen_variance"):
        _tiny(gen_variance="learned")
    with pytest.raises(ConfigError, match="gen_variance"):
        _tiny("wae-deep", gen_variance="fit")


def _eq10(t, w):
    return sum(w[n] * t[f"cost{n}"] for n in range(3)) + w[3] * t["mmd"]


def test_gen_variance_fit_learns_the_residual_variance_where_eq10_collapses_it():
    """Train only p(z_1|z_2) on fixed pairs z_1 = A z_2 + noise (std 0.5): with 'fit' its Σ^p reaches the noise
    variance 0.25, with Eq. 10 alone ('cost') it heads to 0."""
    g = torch.Generator().manual_seed(0)
    z2 = torch.randn(512, DIMS[1], generator=g, dtype=torch.float64)
    A = torch.randn(DIMS[1], DIMS[0], generator=g, dtype=torch.float64)
    z1 = z2 @ A + 0.5 * torch.randn(512, DIMS[0], generator=g, dtype=torch.float64)
    var = {}
    for mode in ("cost", "fit"):
        m = _tiny(gen_variance=mode).train()
        opt = torch.optim.Adam(m.decoders[1].parameters(), lr=1e-2)
        for _ in range(300):
            opt.zero_grad()
            cost, nll = m.latent_cost(2, z1, z2, with_nll=True)
            (cost.mean() + (nll.mean() if nll is not None else 0)).backward()
            opt.step()
        m.eval()
        with torch.no_grad():
            var[mode] = float(m.p_params(2, z2)[1].exp().mean())
    assert var["fit"] == pytest.approx(0.25, rel=0.2)
    assert var["cost"] < 0.02


# --- wae-deep (Eq. 7) ------------------------------------------------------------------------------------------


def test_wae_deep_mmd_uses_ancestral_prior_samples_with_gradients():
    m = _tiny("wae-deep", lam=2.0)
    _perturb_logvars(m)
    assert m.config.objective == "wae" and m.kernel_z1.base == pytest.approx(2 * DIMS[0])
    x = torch.randn(5, 6, dtype=torch.float64)
    torch.manual_seed(4)
    t = m.loss(x)
    assert set(t) == {"loss", "cost0", "mmd_z1", "logvar_penalty"}
    t["loss"].backward()
    for net in m.decoders[1:]:  # the prior networks theta_2..theta_N learn through the samples
        for p in (net.mean_head.weight, net.logvar_head.weight):
            assert p.grad is not None and float(p.grad.abs().sum()) > 0
    with torch.no_grad():
        zs, _ = _replay_chain(m, x, 4)
        torch.manual_seed(4)
        for d in DIMS:
            torch.randn(5, d, dtype=torch.float64)
        z = torch.randn(5, DIMS[-1]).double()
        for i in (3, 2):
            mu, lv = m.p_params(i, z)
            z = mu + (0.5 * lv).exp() * torch.randn(5, DIMS[i - 2], dtype=torch.float64)
        ref = mmd(zs[0], z, m.kernel_z1)
        cost0 = ((m.output(m.decode_logits(zs[0])) - x) ** 2).sum(-1).mean()
    assert float(t["mmd_z1"].detach()) == pytest.approx(float(ref), rel=1e-9)
    assert float(t["loss"].detach()) == pytest.approx(float(cost0 + 2.0 * ref), rel=1e-9)


def test_stacked_top_mmd_gives_no_gradient_to_generative_nets():
    m = _tiny(lambda_rec=0.0)
    m.train()
    x = torch.randn(8, 6, dtype=torch.float64)
    m.loss(x)["mmd"].backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in m.decoders.parameters())


# --- training and interface ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["stacked-wae", "wae-deep"])
def test_loss_decreases_with_adam(name):
    torch.manual_seed(0)
    m = create_model(name, (6,), latent_dims=DIMS, hidden_units=[16, 16, 16], lambda_rec=0.5, lambda_match=0.1)
    x = torch.randn(128, 2) @ torch.randn(2, 6)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = m.loss(x)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:3]) / 3


def _check_interface(m, x):
    N = m.num_layers
    m.eval()
    with torch.no_grad():
        for d in range(N + 1):
            assert m.reconstruct_from(x, d).shape == x.shape
        codes = m.encode_layers(x)
        assert [c.shape for c in codes] == [(x.shape[0], d) for d in m.dims]
        assert torch.allclose(m.encode(x), codes[-1])
        assert torch.allclose(m.reconstruct(x), m.reconstruct_from(x, N))
        assert torch.allclose(m.decode_from(codes[1], 2), m.reconstruct_from(x, 2))
        s = m.sample(5)
        assert s.shape == (5, *x.shape[1:])
        if m.is_image:
            assert float(s.min()) >= 0 and float(s.max()) <= 1
        z, w, g = m.posterior_samples(x)
        assert z.shape == (x.shape[0], m.dims[-1]) and w is None and g is None
        em = m.eval_metrics(x)
        for i in range(1, N + 1):
            assert f"mmd_layer{i}" in em and f"recon_depth{i}" in em and f"cost{i - 1}" in em
        assert all(math.isfinite(float(v)) for v in em.values())
        with pytest.raises(ConfigError, match="depth"):
            m.reconstruct_from(x, N + 1)
    m.train()
    t = m.loss(x)
    t["loss"].backward()
    assert all(torch.isfinite(v) for v in t.values())


def test_mlp_interface_on_images():
    torch.manual_seed(0)
    m = create_model("stacked-wae", (1, 28, 28), width=0.02)
    assert m.arch == "mlp" and m.num_layers == 5 and m.prior.dim == 2 and m.config.latent_dim == 2
    _check_interface(m, torch.rand(6, 1, 28, 28))


def test_resnet_interface_on_small_colour_images():
    torch.manual_seed(0)
    m = create_model("stacked-wae", (3, 8, 8), latent_dims=[16, 8, 8, 2], latent_channels=[1, 2, 2, 2],
                     hidden_units=[4, 4, 4, 4], weight_schedule="svhn", logvar_penalty=[1e-3, 1e-4, 1e-5, 1e-6])
    assert m.arch == "resnet" and m.strides == [2, 2, 1, 2]
    _check_interface(m, torch.rand(4, 3, 8, 8))


def test_presets_build_the_paper_models():
    for name, shape in [("stacked-wae-mnist", (1, 28, 28)), ("wae-deep-mnist", (1, 28, 28)),
                        ("stacked-wae-svhn", (3, 32, 32))]:
        cfg = RunConfig.from_dict(load_preset(name)).validate()
        mc = cfg.model_config
        mc.width = 1 / 32
        m = create_model(cfg.model, shape, mc)
        if "svhn" in name:
            assert cfg.data.dataset == "svhn:train+extra" and cfg.train.batch_size == 100
            assert m.latent_shapes() == [(1, 16, 16), (2, 8, 8), (4, 4, 4), (2, 4, 4), (1, 4, 4), (2, 2, 2)]
            assert m.strides == [2, 2, 2, 1, 1, 2]
            assert m.logvar_weights == pytest.approx([10.0 ** -(2 + i) for i in range(1, 7)])
            assert m.weights == pytest.approx(layer_weights(0.1, 1e-4, 6, schedule="svhn"))
        else:
            assert m.arch == "mlp" and m.dims == [32, 16, 8, 4, 2] and cfg.train.batch_size == 128
            assert mc.hidden_units == [2048, 1024, 512, 256, 128]
        x = torch.rand(3, *shape)
        assert m.loss(x)["loss"].isfinite()
    fit = RunConfig.from_dict(load_preset("stacked-wae-mnist-fitvar"))
    paper = RunConfig.from_dict(load_preset("stacked-wae-mnist"))
    assert fit.model_config.gen_variance == "fit" and paper.model_config.gen_variance == "cost"
    fit.model_config.gen_variance = "cost"
    assert fit == paper  # differs from the paper's preset in nothing else


def test_bad_configs_raise_one_line_errors():
    with pytest.raises(ConfigError, match="hidden_units"):
        create_model("stacked-wae", (6,), latent_dims=[4, 2], hidden_units=[8])
    with pytest.raises(ConfigError, match="architecture"):
        create_model("stacked-wae", (6,), architecture="transformer")
    with pytest.raises(ConfigError, match="latent_channels"):
        create_model("stacked-wae", (3, 32, 32), architecture="resnet")
    with pytest.raises(ConfigError, match="objective"):
        create_model("stacked-wae", (6,), objective="vae")
    with pytest.raises(ConfigError, match="size"):
        create_model("stacked-wae", (3, 8, 8), latent_dims=[4], latent_channels=[1], hidden_units=[4])


def test_save_load_roundtrip(tmp_path):
    m = create_model("wae-deep", (6,), latent_dims=DIMS, hidden_units=[8, 8, 8]).eval()
    save_model(m, tmp_path)
    m2 = load_model(tmp_path)
    x = torch.randn(4, 6)
    with torch.no_grad():
        assert torch.equal(m.reconstruct_from(x, 2), m2.reconstruct_from(x, 2))
    assert m2.config.objective == "wae" and m2.config.latent_dims == DIMS


def test_encode_command_writes_the_code_of_the_chosen_layer(tmp_path, capsys):
    import numpy as np

    from wae.cli import main

    torch.manual_seed(0)
    m = create_model("stacked-wae", (1, 28, 28), width=0.02).eval()
    cfg = RunConfig.from_dict({"model": {"name": "stacked-wae"}, "data": {"dataset": "mnist-5k", "eval_limit": 50}})
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    save_model(m, tmp_path, cfg)
    from wae.data import load_dataset

    x = load_dataset("mnist-5k", "train").x[:20]
    for depth in (1, 3, m.num_layers):
        out = tmp_path / f"z{depth}.npz"
        assert main(["encode", str(tmp_path), "--dataset", "mnist-5k", "--limit", "20", "--depth", str(depth),
                     "--out", str(out)]) == 0
        z = np.load(out)["z"]
        with torch.no_grad():
            ref = m.encode_layers(x, depth)[-1].flatten(1).numpy()
        np.testing.assert_allclose(z, ref, rtol=1e-4, atol=1e-6)
        assert "probs" not in np.load(out)
    assert main(["encode", str(tmp_path), "--depth", str(m.num_layers + 1), "--out", str(tmp_path / "z.npz")]) == 2
    assert "depth must be between 1 and" in capsys.readouterr().err
