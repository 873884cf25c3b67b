"""The consistency term's sharpened, confidence-masked target (UDA-style self-labelling): value and gradient against
a hand computation; the clean side stays a fixed target."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import wae.data.augment as aug
from wae.errors import ConfigError
from wae.models import create_model


def _setup(monkeypatch, tau, thr):
    m = create_model("gm-wae", (1, 28, 28), width=0.125, consistency_weight=1.0, consistency_sharpen=tau,
                     consistency_threshold=thr)
    torch.manual_seed(0)
    x = torch.rand(6, 1, 28, 28)
    warped = torch.rand(6, 1, 28, 28)
    monkeypatch.setattr(aug, "random_affine", lambda t, *a, **k: warped)
    clean_logits = torch.tensor([[4.0, 0, 0, 0], [1.0, 0.5, 0, 0], [0, 0, 3.0, 0], [0.2, 0.1, 0, 0.3],
                                 [0, 6.0, 0, 0], [0, 0, 0, 0.5]], dtype=torch.float64, requires_grad=True)
    warped_logits = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    fn = lambda t: torch.log_softmax(warped_logits, -1)  # noqa: E731  (the warped view's q is warped_logits)
    return m, x, clean_logits, warped_logits, fn


def _hand(clean, warped, tau, thr):
    """value and d value / d warped logits, in NumPy."""
    c, w = clean.detach().numpy(), warped.detach().numpy()
    q = np.exp(c - c.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    p = q ** (1 / tau)
    p /= p.sum(1, keepdims=True)
    r = np.exp(w - w.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    mask = (q.max(1) > thr).astype(float)
    kl = (p * (np.log(p) - np.log(r))).sum(1)
    grad = mask[:, None] * (r - p) / len(c)  # d KL(p ‖ softmax(w)) / dw = softmax(w) − p
    return float((mask * kl).mean()), grad


@pytest.mark.parametrize("tau,thr", [(1.0, 0.0), (0.5, 0.0), (0.25, 0.6)])
def test_sharpened_masked_target_value_and_gradient(monkeypatch, tau, thr):
    m, x, clean, warped, fn = _setup(monkeypatch, tau, thr)
    kl = m.consistency_kl(torch.log_softmax(clean, -1), x, fn)
    value, grad = _hand(clean, warped, tau, thr)
    assert float(kl) == pytest.approx(value, rel=1e-9)
    kl.backward()
    np.testing.assert_allclose(warped.grad.numpy(), grad, rtol=1e-8, atol=1e-12)
    assert clean.grad is None  # the target is fixed: no gradient reaches the clean view
    # a flipped sign would ascend: the gradient points the other way
    assert float((warped.grad * torch.as_tensor(-grad)).sum()) < 0
    if thr:
        assert np.abs(grad[3]).sum() == 0 and np.abs(grad[0]).sum() > 0  # an unconfident datum is masked out


def test_sharpening_pulls_towards_a_more_confident_assignment(monkeypatch):
    m, x, clean, warped, fn = _setup(monkeypatch, 1.0, 0.0)
    lq = torch.log_softmax(clean, -1)
    with torch.no_grad():
        warped.copy_(clean)  # the warped view agrees with the clean one: KL = 0 without sharpening
    assert float(m.consistency_kl(lq, x, fn)) == pytest.approx(0.0, abs=1e-12)
    m.config.consistency_sharpen = 0.5
    assert float(m.consistency_kl(lq, x, fn)) > 0.01  # with it, the agreeing view is still asked to be sharper


def test_bad_sharpen_and_threshold_values_are_refused():
    with pytest.raises(ConfigError, match="consistency_sharpen"):
        create_model("gm-wae", (1, 28, 28), width=0.125, consistency_sharpen=0.0)
    with pytest.raises(ConfigError, match="consistency_threshold"):
        create_model("gm-wae", (1, 28, 28), width=0.125, consistency_threshold=1.0)
