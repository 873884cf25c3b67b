"""Random affine warps of image batches against a per-pixel reference, and the cluster-consistency term they
feed: its value, gradient and wiring into the models' losses."""
import pytest
import torch

from wae.config import ConfigError
from wae.data.augment import affine_images, random_affine


def _shift_reference(img, dy, dx):
    """One image (C, H, W), moved down dy and right dx pixels with zero fill, pixel by pixel."""
    c, h, w = img.shape
    out = torch.zeros_like(img)
    for r in range(h):
        for q in range(w):
            rs, qs = r - dy, q - dx
            if 0 <= rs < h and 0 <= qs < w:
                out[:, r, q] = img[:, rs, qs]
    return out


# --- random affine warps --------------------------------------------------------------------------------------


def _affine_reference(img, angle, shift, scale):
    """Bilinear warp of one image (C, H, W) pixel by pixel: output pixel p (centred pixel units, y down) reads the
    input at R(−angle)(p − shift)/scale, zero outside."""
    import math

    c, h, w = img.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ca, sa = math.cos(angle), math.sin(angle)
    out = torch.zeros_like(img)
    for i in range(h):
        for j in range(w):
            px, py = j - cx - shift[0], i - cy - shift[1]
            x = (ca * px - sa * py) / scale + cx
            y = (sa * px + ca * py) / scale + cy
            x0, y0 = math.floor(x), math.floor(y)
            for yy, xx, wt in ((y0, x0, (1 - (y - y0)) * (1 - (x - x0))), (y0, x0 + 1, (1 - (y - y0)) * (x - x0)),
                               (y0 + 1, x0, (y - y0) * (1 - (x - x0))), (y0 + 1, x0 + 1, (y - y0) * (x - x0))):
                if 0 <= yy < h and 0 <= xx < w:
                    out[:, i, j] += wt * img[:, yy, xx]
    return out


def test_affine_images_matches_a_pixel_by_pixel_bilinear_warp():
    import math

    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 2, 9, 7, dtype=torch.float64, generator=g)
    angle = torch.tensor([0.3, -0.5, 0.0, math.pi / 7], dtype=torch.float64)
    shift = torch.tensor([[0.5, -1.25], [2.0, 0.0], [0.0, 0.0], [-1.5, 0.75]], dtype=torch.float64)
    scale = torch.tensor([1.0, 0.9, 1.15, 1.05], dtype=torch.float64)
    got = affine_images(x, angle, shift, scale)
    for i in range(4):
        torch.testing.assert_close(got[i], _affine_reference(x[i], float(angle[i]), shift[i].tolist(),
                                                             float(scale[i])))


def test_affine_images_special_cases():
    import math

    x = torch.rand(3, 1, 6, 6)
    quarter = affine_images(x, torch.full((3,), math.pi / 2), torch.zeros(3, 2), torch.ones(3))
    torch.testing.assert_close(quarter, torch.rot90(x, 1, (2, 3)))  # counter-clockwise as displayed
    moved = affine_images(x, torch.zeros(3), torch.tensor([[1.0, 0.0], [0.0, -2.0], [2.0, 1.0]]), torch.ones(3))
    for i, (dy, dx) in enumerate([(0, 1), (-2, 0), (1, 2)]):  # integer shifts move the pixels exactly
        torch.testing.assert_close(moved[i], _shift_reference(x[i], dy, dx))


def test_random_affine_ranges():
    x = torch.zeros(500, 1, 21, 21)
    x[:, 0, 8:13, 8:13] = 1.0  # a centred square
    torch.manual_seed(0)
    torch.testing.assert_close(random_affine(x), x)  # no warp asked: identity
    y = random_affine(x, shift=3.0)
    ys, xs = torch.meshgrid(torch.arange(21.0), torch.arange(21.0), indexing="ij")
    mass = y[:, 0].sum((1, 2))
    dy = (y[:, 0] * ys).sum((1, 2)) / mass - 10
    dx = (y[:, 0] * xs).sum((1, 2)) / mass - 10
    assert dx.abs().max() <= 3.0 + 1e-4 and dy.abs().max() <= 3.0 + 1e-4
    assert dx.abs().max() > 2.5 and dx.std() > 1.2  # spread over the range (uniform on [−3, 3]: std 1.73)
    z = random_affine(x, scale=0.2)
    ratio = z[:, 0].sum((1, 2)) / 25  # the square's area scales with the factor squared: in [0.8², 1.2²]
    assert ratio.min() >= 0.8 ** 2 - 0.02 and ratio.max() <= 1.2 ** 2 + 0.02 and ratio.max() - ratio.min() > 0.5


# --- the cluster-consistency term -----------------------------------------------------------------------------


def test_consistency_kl_value_and_no_gradient_through_the_target(monkeypatch):
    import wae.data.augment as aug
    from wae.models import create_model

    m = create_model("gm-wae", (1, 28, 28), width=0.125, consistency={"weight": 1.0})
    x = torch.rand(6, 1, 28, 28)
    warped = torch.rand(6, 1, 28, 28)
    monkeypatch.setattr(aug, "random_affine", lambda t, *a, **k: warped)
    W = torch.randn(784, 10, requires_grad=True)
    fn = lambda t: torch.log_softmax(t.flatten(1) @ W, -1)  # noqa: E731
    logits = torch.randn(6, 10, requires_grad=True)
    log_q = torch.log_softmax(logits, -1)
    kl = m.consistency_kl(log_q, x, fn)
    p, lq = log_q.detach().exp(), fn(warped).detach()
    ref = sum(float((p[i] * (p[i].log() - lq[i])).sum()) for i in range(6)) / 6
    assert abs(float(kl.detach()) - ref) < 1e-5
    kl.backward()
    assert W.grad is not None and W.grad.abs().sum() > 0  # the warped side learns
    assert logits.grad is None  # the clean side is a fixed target


@pytest.mark.parametrize("name", ["gm-wae", "gm-wae-elbo", "gmvae"])
def test_consistency_term_in_the_loss(name, monkeypatch):
    from wae.models import create_model

    torch.manual_seed(0)
    m = create_model(name, (1, 28, 28), width=0.125, consistency={"weight": 2.0})
    x = torch.rand(8, 1, 28, 28)
    torch.manual_seed(1)
    on = m.loss(x)
    assert on["consistency"] > 0
    # the same draws without the term: the loss differs by exactly weight × term
    m.config.consistency.weight = 0.0
    torch.manual_seed(1)
    off = m.loss(x)
    assert "consistency" not in off
    torch.testing.assert_close(on["loss"] - off["loss"], 2.0 * on["consistency"], rtol=1e-4, atol=1e-4)
    # with the identity warp the term vanishes: KL(p ‖ p) = 0
    m.config.consistency.weight = 1.0
    m.config.consistency.rotate = m.config.consistency.shift = m.config.consistency.scale = 0.0
    m.eval()  # batch norm with fixed statistics: the clean and the warped pass see the same function
    assert "consistency" not in m.loss(x)  # evaluation never adds it
    m.train()
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.eval()
    out = m.loss(x)
    assert float(out["consistency"]) < 1e-6


def test_consistency_config_errors():
    from wae.models import create_model

    with pytest.raises(ConfigError, match="consistency.weight must be >= 0"):
        create_model("gm-wae", (1, 28, 28), width=0.125, consistency={"weight": -1.0})
    with pytest.raises(ConfigError, match="consistency.scale"):
        create_model("gmvae", (1, 28, 28), width=0.125, consistency={"scale": 0.7})
    with pytest.raises(ConfigError, match="warps images"):
        create_model("gmvae", (2,), consistency={"weight": 1.0})
