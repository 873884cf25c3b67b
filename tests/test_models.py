"""Models: objectives against brute-force references, interfaces, save/load."""
import math

import pytest
import yaml
import torch

from wae.config import RunConfig
from wae.divergences import mmd_brute_force
from wae.errors import ConfigError
from wae.io import load_model, save_model
from wae.models import create_model, list_models
from wae.models.gmwae import GMWAEConfig


def test_registry_lists_the_core_models():
    names = {e.name for e in list_models()}
    assert {"wae-mmd", "wae-gan", "vae", "gm-wae", "gm-wae-elbo"} <= names
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("nope", (1, 28, 28))


@pytest.mark.parametrize("name", ["wae-mmd", "wae-gan", "vae", "gm-wae", "gm-wae-elbo"])
def test_interface_shapes_on_images(name):
    torch.manual_seed(0)
    kw = {"width": 0.125}
    m = create_model(name, (1, 28, 28), **kw)
    x = torch.rand(6, 1, 28, 28)
    terms = m.loss(x)
    assert "loss" in terms and all(torch.isfinite(v).all() for v in terms.values())
    terms["loss"].backward()
    m.eval()
    assert m.reconstruct(x).shape == x.shape
    s = m.sample(4)
    assert s.shape == (4, 1, 28, 28) and float(s.min()) >= 0 and float(s.max()) <= 1


def _tiny_gm(objective="wae"):
    torch.manual_seed(0)
    if objective == "vae":
        m = create_model("gm-wae-elbo", (6,), latent_dim=3, num_components=3, likelihood="gaussian", width=0.05)
    else:
        m = create_model("gm-wae", (6,), latent_dim=3, num_components=3, width=0.05)
    return m.double().eval()


def test_gm_wae_exact_k_objective_equals_brute_force_loop():
    m = _tiny_gm()
    n, K, S = 4, 3, 1
    x = torch.randn(n, 6, dtype=torch.float64)
    torch.manual_seed(123)
    terms = m.loss(x)
    # replay the same random draws: eps for the codes, then the stratified prior samples
    torch.manual_seed(123)
    eps = torch.randn(n, K, S, 3, dtype=torch.float64)
    zp, wp, gp = m.prior.sample_stratified(math.ceil(n * K * S / K))
    wp = wp / wp.sum()
    q = m.cluster_probs(x)
    mu, logvar = m.q_continuous(x)
    recon = 0.0
    pts, w, g = [], [], []
    for i in range(n):
        for k in range(K):
            for s in range(S):
                z = mu[i, k] + (0.5 * logvar[i, k]).exp() * eps[i, k, s]
                xr = m.decode(z[None])[0]
                recon += float(q[i, k]) * float(((x[i] - xr) ** 2).sum()) / S
                pts.append(z)
                w.append(float(q[i, k]) / (n * S))
                g.append(i)
    recon = m.config.cost_scale * recon / n
    kf = lambda a, b: float(m.kernel(a[None], b[None]))
    ref_mmd = mmd_brute_force(torch.stack(pts), zp.double(), kf, w, wp.double(), g, gp)
    assert float(terms["recon"]) == pytest.approx(recon, rel=1e-9)
    assert float(terms["mmd"]) == pytest.approx(ref_mmd, rel=1e-7, abs=1e-10)
    assert float(terms["loss"]) == pytest.approx(recon + m.config.lam * ref_mmd, rel=1e-7)


def test_gm_vae_elbo_equals_brute_force_sum_over_k():
    m = _tiny_gm(objective="vae")
    n, K = 3, 3
    x = torch.randn(n, 6, dtype=torch.float64)
    torch.manual_seed(7)
    terms = m.loss(x)
    torch.manual_seed(7)
    eps = torch.randn(n, K, 1, 3, dtype=torch.float64)
    q = m.cluster_probs(x)
    mu, logvar = m.q_continuous(x)
    nll = klc = kld = 0.0
    for i in range(n):
        kld += float((q[i] * (q[i].log() - m.prior.log_weights)).sum())  # log(1/K) stored in float32
        for k in range(K):
            z = mu[i, k] + (0.5 * logvar[i, k]).exp() * eps[i, k, 0]
            mean = m.decode(z[None])[0]
            ll = torch.distributions.Normal(mean, 1.0).log_prob(x[i]).sum()
            qk = torch.distributions.Normal(mu[i, k], (0.5 * logvar[i, k]).exp())
            pk = torch.distributions.Normal(m.prior.means[k].double(), m.prior.std)
            nll -= float(q[i, k] * ll)
            klc += float(q[i, k] * torch.distributions.kl_divergence(qk, pk).sum())
    assert float(terms["recon_nll"]) == pytest.approx(nll / n, rel=1e-9)
    assert float(terms["kl_continuous"]) == pytest.approx(klc / n, rel=1e-9)
    assert float(terms["kl_discrete"]) == pytest.approx(kld / n, rel=1e-9)


@pytest.mark.parametrize("name", ["gm-wae", "gm-wae-elbo"])
def test_gm_entropy_term_is_the_entropy_of_the_batch_mean_of_q_d(name):
    """entropy_weight w subtracts w · H(mean_i q_D(·|x_i)) from the loss and nothing else changes."""
    torch.manual_seed(0)
    m = create_model(name, (6,), latent_dim=3, num_components=3, width=0.05, entropy_weight=0.7)
    x = torch.randn(9, 6)
    torch.manual_seed(1)
    on = m.loss(x)
    m.config.entropy_weight = 0.0
    torch.manual_seed(1)
    off = m.loss(x)
    q = m.cluster_probs(x).detach()
    qbar = [sum(float(q[i, k]) for i in range(9)) / 9 for k in range(3)]
    h = -sum(p * math.log(p) for p in qbar)
    assert float(on["qD_entropy"]) == pytest.approx(h, rel=1e-5)
    assert 0 < h <= math.log(3) + 1e-9
    assert float((off["loss"] - on["loss"]).detach()) == pytest.approx(0.7 * h, rel=1e-4)
    # the term's gradient is the entropy's: the loss difference is −w·H as a function of the parameters
    m.config.entropy_weight = 0.7
    torch.manual_seed(1)
    d_on = torch.autograd.grad(m.loss(x)["loss"], list(m.discrete.parameters()))
    m.config.entropy_weight = 0.0
    torch.manual_seed(1)
    d_off = torch.autograd.grad(m.loss(x)["loss"], list(m.discrete.parameters()))
    qb = m.cluster_probs(x).mean(0)
    d_h = torch.autograd.grad(-(qb * qb.log()).sum(), list(m.discrete.parameters()))
    for a, b, c in zip(d_on, d_off, d_h):
        torch.testing.assert_close(a - b, -0.7 * c, rtol=1e-4, atol=1e-6)


def test_gm_pretraining_moves_heads_to_prior_moments():
    torch.manual_seed(0)
    m = create_model("gm-wae", (6,), latent_dim=3, num_components=3, width=0.05)
    x = torch.randn(256, 6)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = float(m.pretrain_loss(x))
    for _ in range(300):
        loss = m.pretrain_loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(m.pretrain_loss(x)) < 0.05 * first
    mu, _ = m.q_continuous(x)
    assert torch.allclose(mu.mean(0), m.prior.means, atol=0.15)


def test_vae_iwae_bound_at_least_elbo_and_elbo_matches_loss():
    torch.manual_seed(0)
    m = create_model("vae", (1, 28, 28), width=0.125, iw_samples=50).eval()
    x = (torch.rand(5, 1, 28, 28) > 0.5).float()
    with torch.no_grad():
        em = m.eval_metrics(x)
        lw = m.elbo_terms(x, 400)
    assert float(em["iwae_bound"]) >= float(lw.mean()) - 1e-3
    # the ELBO's Monte Carlo mean equals −(recon + KL) of loss() in expectation
    with torch.no_grad():
        losses = torch.stack([m.loss(x)["loss"] for _ in range(400)])
    assert float(-lw.mean()) == pytest.approx(float(losses.mean()), rel=0.01)


def test_vae_iwae_bound_is_chunked_and_chunking_does_not_change_it():
    """The importance samples are decoded in bounded chunks (a full-width model on a 500-image test batch with
    100 samples once needed > 24 GB); the bound is the same estimator either way."""
    torch.manual_seed(0)
    m = create_model("vae", (1, 28, 28), width=0.0625, iw_samples=32).eval()
    x = (torch.rand(8, 1, 28, 28) > 0.5).float()
    seen = []
    orig = m.elbo_terms
    m.elbo_terms = lambda x, s: (seen.append(s), orig(x, s))[1]
    with torch.no_grad():
        chunked = torch.stack([m.eval_metrics(x, max_decodes=40)["iwae_bound"] for _ in range(15)])
        whole = torch.stack([m.eval_metrics(x, max_decodes=10**6)["iwae_bound"] for _ in range(15)])
    assert max(seen[:7]) == 5 and sum(seen[:7]) == 32  # 40 // 8 = 5 samples per chunk, 32 in all
    assert float(chunked.mean()) == pytest.approx(float(whole.mean()), abs=4 * float(whole.std()) / 15**0.5 + 1e-3)


def test_wae_mmd_loss_is_recon_plus_lambda_mmd():
    torch.manual_seed(0)
    m = create_model("wae-mmd", (1, 28, 28), width=0.125).eval()
    x = torch.rand(8, 1, 28, 28)
    t = m.loss(x)
    z = m.encode(x)
    assert float(t["recon"]) == pytest.approx(0.05 * float(((m.decode(z) - x) ** 2).sum() / 8), rel=1e-5)
    assert float(t["loss"]) == pytest.approx(float(t["recon"] + 10 * t["mmd"]), rel=1e-6)


@pytest.mark.parametrize("name", ["wae-mmd", "gm-wae", "vae"])
def test_save_load_gives_identical_outputs(tmp_path, name):
    torch.manual_seed(0)
    m = create_model(name, (1, 28, 28), width=0.125).eval()
    save_model(m, tmp_path)
    m2 = load_model(tmp_path)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(m.reconstruct(x), m2.reconstruct(x))
        z = m.prior.sample((3,))
        assert torch.equal(m.decode(z), m2.decode(z))
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_model_values_are_config_errors():
    with pytest.raises(ConfigError, match="dim"):
        create_model("gm-wae", (1, 28, 28), latent_dim=5, num_components=10)
    with pytest.raises(ConfigError, match="penalty"):
        create_model("wae-mmd", (1, 28, 28), penalty="nope", width=0.1)


@pytest.mark.parametrize("name,kw,msg", [
    ("gm-wae", dict(lam=-3.0), "model.lam"),
    ("gm-wae", dict(lam=float("nan")), "model.lam"),
    ("gm-wae", dict(cost_scale=0.0), "model.cost_scale"),
    ("gm-wae", dict(entropy_weight=-1.0), "model.entropy_weight"),
    ("wae-mmd", dict(kernel_scales=[]), "kernel scales"),
    ("wae-mmd", dict(kernel_scales=[1.0, -0.5]), "kernel scales"),
    ("wae-mmd", dict(kernel_scales=[0.0]), "kernel scales"),
    ("wae-mmd", dict(cost_scale=-0.05), "model.cost_scale"),
    ("wae-mmd", dict(lam=float("inf")), "model.lam"),
])
def test_objective_weights_and_kernel_scales_are_checked(name, kw, msg):
    """A negative λ would maximise the MMD and empty scales make it 0: both trained silently before."""
    with pytest.raises(ConfigError, match=msg):
        create_model(name, (1, 28, 28), width=0.1, **kw)


def test_configs_of_earlier_runs_with_removed_settings_read_only_at_their_neutral_values():
    from wae.config import REMOVED, apply_overrides
    from wae.presets import run_config_from_dict

    old = {"model": {"name": "gm-wae", "joint_mmd": 0.0, "kernel": "imq", "head_hidden": 16,
                     "kernel_scales": [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]},
           "train": {"augment_shift": 0, "critic_betas": [0.5, 0.999], "lr": 0.002}}
    cfg = run_config_from_dict(old)
    assert cfg.train.lr == 0.002 and cfg.to_dict() == run_config_from_dict(
        {"model": {"name": "gm-wae"}, "train": {"lr": 0.002}}).to_dict()
    for key, value in [("model.joint_mmd", 1.0), ("model.kernel", "rbf"), ("train.augment_shift", 2)]:
        sec, name = key.split(".")
        d = {"model": {"name": "gm-wae"}, sec: {**({"name": "gm-wae"} if sec == "model" else {}), name: value}}
        with pytest.raises(ConfigError, match=f"{key} was removed"):
            run_config_from_dict(d)
    assert run_config_from_dict({"model": {"name": "wae-mmd", "kernel": "rbf"}}).model_config.kernel == "rbf"
    with pytest.raises(ConfigError, match="model.moment_weight was removed"):
        apply_overrides({}, ["moment_weight=0"], GMWAEConfig)
    assert all(k.split(".")[0] in ("model", "data", "train") for k in REMOVED)
    # a removed setting the model's class still fixes (the foil's objective) reads at that value, not another
    assert run_config_from_dict({"model": {"name": "gm-wae-elbo", "objective": "vae"}}).model == "gm-wae-elbo"
    with pytest.raises(ConfigError, match="model.objective was removed"):
        run_config_from_dict({"model": {"name": "gm-wae-elbo", "objective": "wae"}})


def test_nested_groups_take_dotted_overrides_and_refuse_the_old_flat_keys():
    from wae.config import apply_overrides, leaf_paths
    from wae.presets import resolve_config

    cfg = resolve_config("gm-wae", sets=["consistency.weight=2", "model.consistency.rotate=20", "restarts.count=3",
                                         "train.restarts.select=confidence", "max_steps=100", "hardware.devices=2"])
    assert (cfg.model_config.consistency.weight, cfg.model_config.consistency.rotate) == (2.0, 20.0)
    assert cfg.model_config.consistency.shift == 2.0  # the rest of the group keeps its values
    assert (cfg.train.restarts.count, cfg.train.restarts.select, cfg.train.hardware.devices) == (3, "confidence", "2")
    again = RunConfig.from_yaml(cfg.to_yaml())
    assert again == cfg
    for old, new in [("consistency_weight=2", "model.consistency.weight"), ("restarts=3", "train.restarts.count"),
                     ("train.restart_select=tail", "train.restarts.select"), ("devices=2", "train.hardware.devices"),
                     ("data.split=test", "data.dataset"), ("critic_lr=1e-3", "model.critic_lr")]:
        with pytest.raises(ConfigError, match=f"renamed to {new}"):
            resolve_config("gm-wae", sets=[old])
    for d, new in [({"train": {"restarts": 3}}, "train.restarts.count"),
                   ({"model": {"name": "gm-wae", "consistency_rotate": 9}}, "model.consistency.rotate")]:
        with pytest.raises(ConfigError, match=f"renamed to {new}"):
            RunConfig.from_dict({"model": {"name": "gm-wae"}, **d})
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides({}, ["consistency.wieght=1"], GMWAEConfig)
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides({}, ["weight=1"], GMWAEConfig)  # a path within its section, not a bare leaf name
    assert "consistency.weight" in leaf_paths(GMWAEConfig) and "restarts.count" in leaf_paths(type(cfg.train))


def test_a_run_stored_before_the_groups_loads_with_its_settings_moved(tmp_path):
    """config.yaml and model.yaml written before issue 35 (flat keys) load into today's groups, same values."""
    from wae.presets import load_run_config

    old = {"model": {"name": "gm-wae", "latent_dim": 3, "num_components": 3, "width": 0.05, "consistency_weight": 3.0,
                     "consistency_rotate": 35.0, "k_top": 1, "samples_per_component": 1, "objective": "wae"},
           "data": {"dataset": "svhn", "split": "train+extra", "val_size": None, "workers": 2},
           "train": {"restarts": 3, "restart_fraction": 0.25, "restart_select": "ensemble", "restart_steps": 0,
                     "accelerator": "cpu", "devices": "1", "progress": False, "eps": 1e-8, "critic_lr": 1e-3}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    cfg = load_run_config(tmp_path / "config.yaml")
    assert (cfg.model_config.consistency.weight, cfg.model_config.consistency.rotate) == (3.0, 35.0)
    assert cfg.data.dataset == "svhn:train+extra"
    assert (cfg.train.restarts.count, cfg.train.restarts.fraction, cfg.train.restarts.select) == (3, 0.25, "ensemble")
    assert cfg.train.hardware.accelerator == "cpu"
    gan = load_run_config_from({"model": {"name": "wae-gan"}, "train": {"critic_lr": 1e-3}}, tmp_path)
    assert gan.model_config.critic_lr == 1e-3  # moved to the model that has the critic
    m = create_model("gm-wae", (6,), latent_dim=3, num_components=3, width=0.05,
                     consistency={"weight": 3.0, "noise": 0.2})
    save_model(m, tmp_path, cfg)
    meta = yaml.safe_load((tmp_path / "model.yaml").read_text())
    group = meta["model_config"].pop("consistency")
    meta["model_config"].update({f"consistency_{k}": v for k, v in group.items()}, k_top=1)
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(meta))
    loaded = load_model(tmp_path)
    assert loaded.config.consistency.weight == 3.0 and loaded.config == m.config


def load_run_config_from(d: dict, tmp_path):
    from wae.presets import load_run_config

    p = tmp_path / "other.yaml"
    p.write_text(yaml.safe_dump(d))
    return load_run_config(p)


def test_run_config_yaml_round_trip_and_errors():
    cfg = RunConfig.from_dict({"model": {"name": "gm-wae", "lam": 20}, "train": {"betas": [0.9, 0.99]}})
    again = RunConfig.from_yaml(cfg.to_yaml())
    assert again == cfg and again.model_config.lam == 20.0 and again.train.betas == (0.9, 0.99)
    with pytest.raises(ConfigError, match="unknown key"):
        RunConfig.from_dict({"model": {"name": "gm-wae", "lamda": 1}})
    with pytest.raises(ConfigError, match="expected a number"):
        RunConfig.from_dict({"model": {"name": "gm-wae"}, "train": {"lr": "abc"}})
    with pytest.raises(ConfigError, match="unknown model"):
        RunConfig.from_dict({"model": {"name": "zzz"}})


def test_evaluate_model_averages_the_iwae_bound_over_a_subset_and_records_it():
    from wae.data import Dataset
    from wae.evaluation.runner import evaluate_model

    torch.manual_seed(0)
    ds = Dataset("toy:test", (torch.rand(30, 1, 28, 28) > 0.5).float(), None)
    vae = create_model("vae", (1, 28, 28), width=0.0625, iw_samples=4)
    out = evaluate_model(vae, ds, iwae_points=12, batch_size=5)
    assert out["test/iwae_points"] == 12 and "test/iwae_bound" in out
    wae_out = evaluate_model(create_model("wae-mmd", (1, 28, 28), width=0.0625), ds, batch_size=5)
    assert "test/iwae_points" not in wae_out


def test_every_preset_is_a_valid_run_config():
    from wae.config import list_presets, load_preset

    names = list_presets()
    assert {"main", "gm-wae-mnist", "gmvae-mnist", "gmvae-mnist-usage", "stacked-wae-mnist"} <= set(names)
    for name in names:
        cfg = RunConfig.from_dict(load_preset(name))
        cfg.validate()
        assert RunConfig.from_yaml(cfg.to_yaml()) == cfg, name
    usage = RunConfig.from_dict(load_preset("gmvae-mnist-usage"))
    paper = RunConfig.from_dict(load_preset("gmvae-mnist"))
    assert usage.model_config.usage_weight == 1.0 and paper.model_config.usage_weight == 0.0
    assert usage.train.epochs == paper.train.epochs == 100
    assert usage.train.lr == 3e-4 and paper.train.lr == 1e-4  # the paper's rate stays in the paper preset
    cons = RunConfig.from_dict(load_preset("gmvae-mnist-consistency"))
    assert cons.model_config.consistency.weight == 3.0 and usage.model_config.consistency.weight == 0.0
    # everything else is the usage preset's
    cons.model_config.consistency.weight = 0.0
    assert cons == usage
    gm_cons = RunConfig.from_dict(load_preset("gm-wae-mnist-consistency"))
    gm = RunConfig.from_dict(load_preset("gm-wae-mnist"))
    assert (gm_cons.model_config.consistency.weight, gm_cons.model_config.entropy_weight) == (3.0, 1.0)
    assert (gm.model_config.consistency.weight, gm.model_config.entropy_weight) == (0.0, 0.0)
    gm_cons.model_config.consistency.weight = gm_cons.model_config.entropy_weight = 0.0
    assert gm_cons == gm  # everything else is the paper preset's
    best = RunConfig.from_dict(load_preset("gm-wae-mnist-best"))
    main = RunConfig.from_dict(load_preset("main"))
    assert (best.train.restarts.count, best.train.restarts.select, best.model_config.pseudo_label_weight) == (5, "ensemble", 1.0)
    assert best.train.max_minutes is None
    best.train.restarts.count, best.train.restarts.select, best.model_config.pseudo_label_weight = 3, "tail", 0.0
    best.train.max_minutes = main.train.max_minutes
    assert best == main  # everything else is the main job's
    gmvae_best = RunConfig.from_dict(load_preset("gmvae-mnist-best"))
    m = gmvae_best.model_config
    assert (m.num_components, m.width, m.consistency.rotate) == (30, 0.5, 35.0)
    assert (gmvae_best.train.max_steps, gmvae_best.data.dataset, gmvae_best.data.val_fraction) == (3000, "mnist-5k", 0.1)
    m.num_components, m.width, m.consistency.rotate = 10, 1.0, 15.0
    gmvae_best.train.max_steps = cons.train.max_steps
    gmvae_best.data = cons.data
    cons.model_config.consistency.weight = 3.0
    assert gmvae_best == cons  # everything else is gmvae-mnist-consistency's


def test_the_gm_wae_elbo_foil_is_refused_by_its_old_name_with_the_new_one(capsys):
    """`gm-vae` (GM-WAE's ELBO foil) was renamed `gm-wae-elbo` so that it cannot be mistaken for `gmvae`
    (Dilokthanakul's GMVAE): the old name — a model, a preset, an experiment — ends in one line naming the new one."""
    from wae.cli import main

    for argv, new in ((["config", "gm-vae"], "'gm-wae-elbo'"), (["train", "gm-vae", "--dry-run"], "'gm-wae-elbo'"),
                      (["config", "--preset", "gm-vae-mnist"], "'gm-wae-elbo-mnist'"),
                      (["train", "gm-wae-elbo", "--preset", "gm-vae-mnist", "--dry-run"], "'gm-wae-elbo-mnist'"),
                      (["reproduce", "gm-vae-collapse"], "'gm-wae-elbo-collapse'")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.endswith(f"was renamed to {new}"), (argv, err)
    with pytest.raises(ConfigError, match="renamed to 'gm-wae-elbo'"):
        create_model("gm-vae", (6,))
    assert main(["config", "gm-wae-elbo"]) == 0 and "name: gm-wae-elbo" in capsys.readouterr().out


def test_a_run_saved_under_the_old_foil_name_still_loads(tmp_path):
    """A run directory or export written before the rename (model.yaml, config.yaml say `gm-vae`) loads as
    `gm-wae-elbo`, with the same weights."""
    import wae
    from wae.presets import load_run_config, resolve_config

    torch.manual_seed(0)
    m = create_model("gm-wae-elbo", (6,), latent_dim=3, num_components=3, width=0.05, likelihood="gaussian")
    cfg = resolve_config("gm-wae-elbo", sets=["latent_dim=3", "num_components=3", "width=0.05",
                                              "likelihood=gaussian"])
    save_model(m, tmp_path, cfg)
    (tmp_path / "config.yaml").write_text(cfg.to_yaml())
    for f in ("model.yaml", "config.yaml"):
        text = (tmp_path / f).read_text()
        assert "gm-wae-elbo" in text
        (tmp_path / f).write_text(text.replace("gm-wae-elbo", "gm-vae"))
    loaded = wae.load(tmp_path)
    assert loaded.registry_name == "gm-wae-elbo" and type(loaded) is type(m)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), loaded.state_dict().values()))
    assert load_run_config(tmp_path / "config.yaml").model == "gm-wae-elbo"
    assert resolve_config(None, config_file=str(tmp_path / "config.yaml")).model == "gm-wae-elbo"


def test_a_rename_needs_a_registered_new_name_and_a_free_old_one():
    from wae.registry import Registry

    r = Registry("colour")
    r.add("red", 1)
    r.add("blue", 2)
    with pytest.raises(RuntimeError):
        r.rename("rouge", "rot")  # the new name is not registered
    with pytest.raises(RuntimeError):
        r.rename("blue", "red")  # the old name is still registered
    r.rename("rouge", "red")
    assert r.current("rouge") == "red" and r.current("blue") == "blue" and "rouge" not in r


def test_a_preset_inherits_from_its_base_and_lists_only_what_differs(tmp_path, monkeypatch):
    """`base: NAME` lays the preset's own keys over NAME's (null removes one); a loop and a bad base are one error."""
    import wae.config as C
    from wae.config import RunConfig, load_preset
    from wae.errors import ConfigError

    best, main_ = RunConfig.from_dict(load_preset("gm-wae-mnist-best")), RunConfig.from_dict(load_preset("main"))
    assert (best.train.restarts.count, best.train.restarts.select, best.train.max_minutes) == (5, "ensemble", None)
    assert best.model_config.pseudo_label_weight == 1.0 and main_.model_config.pseudo_label_weight == 0.0
    assert best.model_config.consistency.rotate == main_.model_config.consistency.rotate == 35.0  # from main
    assert "base" not in load_preset("gm-wae-mnist-best")
    (tmp_path / "a.yaml").write_text("base: b\nmodel: {name: gm-wae}\n")
    (tmp_path / "b.yaml").write_text("base: a\n")
    (tmp_path / "c.yaml").write_text("base: [main]\n")
    monkeypatch.setattr(C, "PRESET_DIR", tmp_path)
    with pytest.raises(ConfigError, match="inherits from itself: a → b → a"):
        load_preset("a")
    with pytest.raises(ConfigError, match="base must be a preset's name"):
        load_preset("c")
