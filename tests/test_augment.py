"""Random-shift augmentation: values against a per-image brute-force translation, the offset range, the wiring into
training batches, and clear errors for bad settings."""
import pytest
import torch

from wae.config import ConfigError, RunConfig, TrainConfig
from wae.data.augment import random_shift, shift_images
from wae.models.registry import create_model
from wae.training.module import LitAutoEncoder


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


def test_shift_images_matches_pixel_by_pixel_translation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 2, 7, 9, generator=g)
    dy = torch.tensor([0, 1, -1, 3, -2, 0])
    dx = torch.tensor([0, -3, 2, 0, 1, 4])
    got = shift_images(x, dy, dx)
    for i in range(6):
        torch.testing.assert_close(got[i], _shift_reference(x[i], int(dy[i]), int(dx[i])))
    assert got.data_ptr() != x.data_ptr()


def test_random_shift_draws_every_offset_in_range_and_only_those():
    # a single bright pixel in the centre: where it lands is the offset that was drawn
    n, s = 4000, 2
    x = torch.zeros(n, 1, 11, 11)
    x[:, 0, 5, 5] = 1.0
    torch.manual_seed(0)
    y = random_shift(x, s)
    assert torch.equal(y.sum((1, 2, 3)), torch.ones(n))  # nothing lost: the pixel never leaves the image
    pos = y[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 11 - 5, pos % 11 - 5
    counts = torch.zeros(2 * s + 1, 2 * s + 1)
    for a, b in zip(dy.tolist(), dx.tolist()):
        counts[a + s, b + s] += 1
    assert (counts > 0).all() and counts.sum() == n  # all 25 offsets, nothing outside [-2, 2]^2
    expected = n / counts.numel()
    assert ((counts - expected).abs() < 5 * expected ** 0.5).all()  # uniform within sampling noise


def test_random_shift_zero_is_identity_and_generator_makes_it_reproducible():
    x = torch.rand(5, 1, 8, 8)
    assert random_shift(x, 0) is x
    a = random_shift(x, 3, torch.Generator().manual_seed(7))
    b = random_shift(x, 3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_shift_images_rejects_non_images_and_oversized_shifts():
    with pytest.raises(ValueError, match="N, C, H, W"):
        shift_images(torch.rand(4, 10), torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="does not fit"):
        shift_images(torch.rand(2, 1, 4, 4), torch.tensor([4, 0]), torch.tensor([0, 0]))


def test_training_batches_are_shifted_copies_of_the_data():
    torch.manual_seed(0)
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 10:18, 10:18] = torch.rand(8, 1, 8, 8) + 0.1  # content away from the border: a shift loses nothing
    model = create_model("wae-mmd", (1, 28, 28), RunConfig.from_dict({"model": {"name": "wae-mmd"}}).model_config)
    idx = torch.arange(8)
    plain = LitAutoEncoder(model, TrainConfig(), x)._batch(idx)
    assert torch.equal(plain, x)
    lit = LitAutoEncoder(model, TrainConfig(augment_shift=2), x)
    batches = [lit._batch(idx) for _ in range(5)]
    assert any(not torch.equal(b, x) for b in batches)
    for b in batches:
        torch.testing.assert_close(b.sum((1, 2, 3)), x.sum((1, 2, 3)))  # translated, not altered
        for i in range(8):  # each image is x[i] moved by some offset in [-2, 2]^2
            assert any(torch.equal(b[i], shift_images(x[i:i + 1], torch.tensor([u]), torch.tensor([v]))[0])
                       for u in range(-2, 3) for v in range(-2, 3))


def test_bad_augment_shift_is_a_config_error():
    cfg = RunConfig.from_dict({"model": {"name": "wae-mmd"}, "train": {"augment_shift": -1}})
    with pytest.raises(ConfigError, match="augment_shift"):
        cfg.validate()
