"""Discriminators (every name raygrid.spec.discriminators allows) and GAN losses."""

import math

import pytest
import torch

from raygrid import spec
from raygrid.nets.discriminators import ConvTrunk, GANLoss, create_discriminator

NAMES = [n for n in spec.discriminator_names() if n != spec.NO_DISCRIMINATOR]
# trunk stride of the last map at a 64 px input: conv /16, vgg16 /16, resnet50 /32, dinov2 /14 (padded)
PATCH_MAP = {"conv": (4, 4), "vgg16": (4, 4), "resnet50": (2, 2), "dinov2_vits14": (5, 5)}


@pytest.fixture(scope="module")
def discs():
    cache = {}

    def get(name, trainable=True):
        if (name, trainable) not in cache:
            torch.manual_seed(0)
            cache[name, trainable] = create_discriminator(name, trunk_trainable=trainable)
        return cache[name, trainable]

    return get


def test_names_match_the_spec():
    assert len(NAMES) == 8
    for name in ("none", "cnn_vgg16", "patch_vgg19", "patch"):
        with pytest.raises(ValueError):
            create_discriminator(name)


@pytest.mark.parametrize("name", NAMES)
def test_logit_shape_and_finite_losses(discs, name):
    head, trunk = spec.split_discriminator(name)
    d = discs(name)
    x = torch.rand(2, 3, 64, 64)
    logits = d(x)
    expected = (2, 1) if head == "vanilla" else (2, 1, *PATCH_MAP[trunk])
    assert tuple(logits.shape) == expected
    assert d.trunk.name == trunk
    fake = d(torch.rand(2, 3, 64, 64))
    for kind in spec.GAN_LOSSES:
        loss = GANLoss(kind, 0.1)
        assert torch.isfinite(loss.d_loss(logits, fake)) and torch.isfinite(loss.g_loss(fake, logits))


@pytest.mark.parametrize("name", ["patch_resnet50", "vanilla_dinov2_vits14"])
def test_frozen_trunk_passes_gradient_to_the_image_only(discs, name):
    d = discs(name, trainable=False)
    d.train()
    assert not d.trunk.training and d.head.training  # frozen BatchNorm statistics
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    GANLoss("vanilla").g_loss(d(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the generator is trained through D
    assert all(not p.requires_grad and p.grad is None for p in d.trunk.parameters())
    assert all(p.grad is not None for p in d.head.parameters())
    d.zero_grad(set_to_none=True)


def test_trainable_trunk_gets_gradients(discs):
    d = discs("patch_vgg16")
    GANLoss("hinge").d_loss(d(torch.rand(1, 3, 64, 64)), d(torch.rand(1, 3, 64, 64))).backward()
    assert all(p.grad is not None for p in d.trunk.parameters())
    d.zero_grad(set_to_none=True)


def test_conv_trunk_weights(tmp_path):
    t = ConvTrunk()
    assert t.channels == [64, 128, 256, 512] and t.reductions == [2, 4, 8, 16]
    assert [tuple(f.shape[1:]) for f in t(torch.rand(1, 3, 64, 64))][-1] == (512, 4, 4)
    create_discriminator("patch_conv", weights="imagenet")  # a sweep's default spec: from scratch
    with pytest.raises(ValueError, match="no pretrained tag 'fb_in1k'"):
        create_discriminator("patch_conv", weights="fb_in1k")
    torch.save(t.state_dict(), tmp_path / "trunk.pt")
    d = create_discriminator("vanilla_conv", weights=f"file:{tmp_path / 'trunk.pt'}")
    assert all(torch.equal(a, b) for a, b in zip(d.trunk.state_dict().values(), t.state_dict().values()))
    torch.save({"w": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: not a conv discriminator trunk"):
        create_discriminator("vanilla_conv", weights=f"file:{tmp_path / 'bad.pt'}")


def test_vanilla_head_keeps_a_4x4_layout_at_any_size():
    d = create_discriminator("vanilla_conv", input_size=64)
    assert d.head.fc1.in_features == 512 * 16  # ESRGAN's VGG-style D flattens a 4 x 4 x 512 map
    for size in (64, 96, 256):
        assert tuple(d(torch.rand(1, 3, size, size)).shape) == (1, 1)
    with pytest.raises(ValueError, match="input_size must be >= 32, got 16"):
        create_discriminator("patch_conv", input_size=16)


def test_state_dict_round_trip_and_name_check(discs, tmp_path):
    d = discs("patch_conv")
    torch.save({"discriminator": d.state_dict()}, tmp_path / "d.pt")
    d2 = create_discriminator("patch_conv")
    d2.load_state_dict(torch.load(tmp_path / "d.pt", weights_only=True)["discriminator"])
    x = torch.rand(1, 3, 64, 64)
    d.eval(), d2.eval()
    assert torch.allclose(d(x), d2(x))
    other = create_discriminator("vanilla_conv")
    with pytest.raises((ValueError, RuntimeError)):
        other.load_state_dict(d.state_dict())
    d.train()


# --- GAN losses ---------------------------------------------------------------------------------


def test_gan_loss_values():
    z = torch.zeros(4, 1)
    assert math.isclose(float(GANLoss("vanilla").d_loss(z, z)), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(float(GANLoss("vanilla").g_loss(z)), math.log(2), rel_tol=1e-6)
    assert float(GANLoss("hinge").d_loss(z + 2, z - 2)) == 0.0
    assert float(GANLoss("hinge").g_loss(z + 3)) == -3.0
    assert float(GANLoss("lsgan").d_loss(z + 1, z)) == 0.0
    assert float(GANLoss("lsgan").g_loss(z)) == 1.0
    # relativistic average: equal logits carry no preference
    assert math.isclose(float(GANLoss("relativistic").d_loss(z, z)), math.log(2), rel_tol=1e-6)
    assert math.isclose(float(GANLoss("relativistic").g_loss(z, z)), math.log(2), rel_tol=1e-6)


@pytest.mark.parametrize("kind", spec.GAN_LOSSES)
def test_weight_scales_only_the_generator_term(kind):
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(4, 1, 3, 3, generator=g), torch.randn(4, 1, 3, 3, generator=g)
    w1, w2 = GANLoss(kind, 1.0), GANLoss(kind, 0.05)
    assert torch.equal(w1.d_loss(real, fake), w2.d_loss(real, fake))
    assert torch.isclose(w2.g_loss(fake, real), 0.05 * w1.g_loss(fake, real))


@pytest.mark.parametrize("kind", spec.GAN_LOSSES)
def test_loss_directions(kind):
    """Where D is wrong (real logits < 0 < fake logits), D pushes real up and fake down; G pushes fake up."""
    g = torch.Generator().manual_seed(1)
    real = (-torch.rand(8, 1, generator=g)).requires_grad_(True)
    fake = torch.rand(8, 1, generator=g).requires_grad_(True)
    loss = GANLoss(kind)
    loss.d_loss(real, fake).backward()
    assert (real.grad <= 0).all() and (fake.grad >= 0).all() and real.grad.abs().sum() > 0
    fake.grad = None
    loss.g_loss(fake, real.detach()).backward()
    assert (fake.grad <= 0).all() and fake.grad.abs().sum() > 0


def test_relativistic_generator_needs_real_logits():
    with pytest.raises(ValueError, match="real_logits"):
        GANLoss("relativistic").g_loss(torch.zeros(2, 1))
    with pytest.raises(ValueError, match="unknown GAN loss 'wgan'"):
        GANLoss("wgan")
