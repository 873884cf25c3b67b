"""The neighbour view of the consistency term (``consistency_neighbours``): the k-NN table against a brute-force
reference, the term's value with a view against a hand computation, and the training loop's draw of the view."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wae.config import TrainConfig
from wae.data.neighbours import nearest_neighbours
from wae.estimator import GMWAEClustering
from wae.models import create_model
from wae.training.module import LitAutoEncoder


@pytest.mark.parametrize("chunk", [3, 1024])
def test_nearest_neighbours_match_a_brute_force_search_and_never_name_the_row_itself(chunk):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 2, 3, generator=g, dtype=torch.float64)
    nb = nearest_neighbours(x, 4, chunk=chunk)
    flat = x.reshape(37, -1)
    for i in range(37):
        d = [((flat[i] - flat[j]) ** 2).sum().item() if j != i else np.inf for j in range(37)]
        assert nb[i].tolist() == list(np.argsort(d, kind="stable")[:4])
    with pytest.raises(ValueError):
        nearest_neighbours(x, 37)


def test_consistency_with_a_view_is_the_kl_to_the_views_assignment():
    torch.manual_seed(0)
    m = create_model("gm-wae", (6,), latent_dim=2, num_components=3, width=0.05, head_hidden=4,
                     consistency_weight=1.0, consistency_neighbours=2).double().eval()
    x, v = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    lq, lv = m.q_discrete(x), m.q_discrete(v)
    ref = (lq.exp() * (lq - lv)).sum(-1).mean()  # no noise or dropout: T is the identity
    got = m.consistency_kl(lq.detach(), x, m.q_discrete, view=v)
    assert torch.allclose(got, ref) and float(ref) > 1e-4
    assert float(m.consistency_kl(lq, x, m.q_discrete)) == pytest.approx(0.0, abs=1e-12)  # no view: T(x) = x


def test_training_loop_draws_each_datums_view_from_its_neighbours():
    torch.manual_seed(0)
    x = torch.cat([torch.zeros(4, 3), torch.full((4, 3), 10.0)]) + 0.01 * torch.arange(8.0)[:, None]
    m = create_model("gm-wae", (3,), latent_dim=2, num_components=2, width=0.05, head_hidden=4,
                     consistency_weight=1.0, consistency_neighbours=2)
    lit = LitAutoEncoder(m, TrainConfig(), x)
    lit.neighbours = nearest_neighbours(x, 2)
    idx = torch.arange(8).repeat(20)
    views = lit._neighbour_view(idx)
    for i, v in zip(idx.tolist(), views):
        j = int((x - v).abs().sum(-1).argmin())
        assert j != i and j in lit.neighbours[i].tolist()
    assert len({int((x - v).abs().sum(-1).argmin()) for v in views[idx == 0]}) == 2  # both neighbours get drawn


def test_vectors_train_with_the_neighbour_view_alone(monkeypatch):
    from wae.models.gmwae import GaussianMixtureAE
    seen = []
    orig = GaussianMixtureAE.objective

    def spy(self, x, view=None):
        if self.training:
            seen.append(view is not None and view.shape == x.shape and not torch.equal(view, x))
        return orig(self, x, view)

    monkeypatch.setattr(GaussianMixtureAE, "objective", spy)
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (40, 5)), rng.normal(6, 1, (40, 5))])
    est = GMWAEClustering(2, max_steps=30, random_state=0, device="cpu",
                          overrides=["model.consistency_noise=0", "model.consistency_dropout=0",
                                     "model.consistency_neighbours=3", "train.restarts=1"]).fit(X)
    assert est.n_iter_ == 30 and set(np.unique(est.labels_)) <= {0, 1}
    assert len(seen) >= 30 and all(seen)  # every training step saw a neighbour view
