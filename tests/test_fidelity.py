"""DISTS-style fidelity: identity/symmetry, exact DISTS on vgg16, loss gradients, alpha/beta fitting."""

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from raygrid import spec
from raygrid.nets.fidelity import (
    FidelityMeasure,
    create_fidelity,
    fit_alpha_beta,
    texture_crop_pairs,
)
from raygrid.weights import MissingWeightsError, WeightsHashError


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Sized for one core: on a shared machine, intra-op threads that wait for a busy core made
    these small forwards several times slower (measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def measures(backbone):
    """Uniform-α/β measures on the session's random-weight backbones (what create_fidelity(name)
    builds, without building each backbone again)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = FidelityMeasure(backbone(name))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def xy():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)


@pytest.mark.parametrize("name", list(spec.BACKBONES))
def test_identity_and_symmetry(measures, xy, name):
    m = measures(name)
    x, y = xy
    assert m.chns[0] == 3 and m.chns[1:] == m.backbone.channels
    d_xy, d_yx, d_xx = m(x, y), m(y, x), m(x, x)
    assert d_xy.shape == (2,) and not d_xy.requires_grad
    assert torch.allclose(d_xx, torch.zeros(2), atol=1e-6)
    assert torch.allclose(d_xy, d_yx, atol=1e-6)
    assert (d_xy > 1e-3).all()  # different images are at a positive distance


def test_measure_metadata(measures):
    m = measures("vgg16")
    assert m.lower_better is True and m.mode == "FR" and m.score_range == (0.0, 1.0)
    assert not any(p.requires_grad for p in m.parameters())


# --- An independent implementation of the published DISTS (dingkeyan93/DISTS DISTS_pt.py) ------


class RefL2pooling(nn.Module):
    def __init__(self, channels, filter_size=5, stride=2):
        super().__init__()
        self.padding, self.stride, self.channels = (filter_size - 2) // 2, stride, channels
        a = np.hanning(filter_size)[1:-1]
        g = torch.Tensor(a[:, None] * a[None, :])
        g = g / torch.sum(g)
        self.register_buffer("filter", g[None, None, :, :].repeat((self.channels, 1, 1, 1)))

    def forward(self, x):
        out = nn.functional.conv2d(x**2, self.filter, stride=self.stride, padding=self.padding, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class RefDISTS(nn.Module):
    def __init__(self, vgg_features, alpha, beta):
        super().__init__()
        f = vgg_features
        self.stage1 = nn.Sequential(*[f[i] for i in range(4)])
        self.stage2 = nn.Sequential(RefL2pooling(64), *[f[i] for i in range(5, 9)])
        self.stage3 = nn.Sequential(RefL2pooling(128), *[f[i] for i in range(10, 16)])
        self.stage4 = nn.Sequential(RefL2pooling(256), *[f[i] for i in range(17, 23)])
        self.stage5 = nn.Sequential(RefL2pooling(512), *[f[i] for i in range(24, 30)])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1))
        self.chns = [3, 64, 128, 256, 512, 512]
        self.alpha, self.beta = alpha, beta

    def forward_once(self, x):
        h = (x - self.mean) / self.std
        h1 = self.stage1(h)
        h2 = self.stage2(h1)
        h3 = self.stage3(h2)
        h4 = self.stage4(h3)
        h5 = self.stage5(h4)
        return [x, h1, h2, h3, h4, h5]

    def forward(self, x, y):
        feats0, feats1 = self.forward_once(x), self.forward_once(y)
        dist1 = dist2 = 0
        c1 = c2 = 1e-6
        w_sum = self.alpha.sum() + self.beta.sum()
        alpha = torch.split(self.alpha / w_sum, self.chns, dim=1)
        beta = torch.split(self.beta / w_sum, self.chns, dim=1)
        for k in range(len(self.chns)):
            x_mean = feats0[k].mean([2, 3], keepdim=True)
            y_mean = feats1[k].mean([2, 3], keepdim=True)
            S1 = (2 * x_mean * y_mean + c1) / (x_mean**2 + y_mean**2 + c1)
            dist1 = dist1 + (alpha[k] * S1).sum(1, keepdim=True)
            x_var = ((feats0[k] - x_mean) ** 2).mean([2, 3], keepdim=True)
            y_var = ((feats1[k] - y_mean) ** 2).mean([2, 3], keepdim=True)
            xy_cov = (feats0[k] * feats1[k]).mean([2, 3], keepdim=True) - x_mean * y_mean
            S2 = (2 * xy_cov + c2) / (x_var + y_var + c2)
            dist2 = dist2 + (beta[k] * S2).sum(1, keepdim=True)
        return 1 - (dist1 + dist2).squeeze()


@pytest.fixture(scope="module")
def dists_pair(tmp_path_factory):
    """raygrid's vgg16 measure with DISTS-format alpha/beta, and the reference with the same weights."""
    g = torch.Generator().manual_seed(7)
    # non-negative, some exact zeros, not normalised: like the official file (which sums to 1)
    alpha = torch.rand(1, 1475, 1, 1, generator=g) * 2
    beta = torch.rand(1, 1475, 1, 1, generator=g) * (torch.rand(1, 1475, 1, 1, generator=g) > 0.3)
    path = tmp_path_factory.mktemp("ab") / "weights.pt"
    torch.save({"alpha": alpha, "beta": beta}, path)  # the official file's format
    torch.manual_seed(3)
    ours = create_fidelity("vgg16", alpha_beta=f"file:{path}")
    vgg = make_layers(cfgs["D"])
    vgg.load_state_dict(ours.backbone.features.state_dict(), strict=False)  # pools hold no weights
    ref = RefDISTS(vgg.eval(), alpha, beta)
    return ours, ref


def test_vgg16_equals_the_published_dists_formula(dists_pair):
    ours, ref = dists_pair
    g = torch.Generator().manual_seed(11)
    x = torch.rand(3, 3, 64, 80, generator=g)
    y = (x + 0.2 * torch.randn(3, 3, 64, 80, generator=g)).clamp(0, 1)
    z = torch.rand(3, 3, 64, 80, generator=g)
    with torch.no_grad():
        for a, b in ((x, y), (x, z), (y, z)):
            expected = ref(a, b)
            got = ours(a, b)
            assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got, expected)
            assert (got - expected).abs().max() < 1e-5


def test_alpha_beta_are_normalised_by_their_common_sum(dists_pair):
    ours, _ = dists_pair
    a, b = ours.normalized_weights()
    assert abs(float(a.sum() + b.sum()) - 1) < 1e-5 and (a >= 0).all() and (b >= 0).all()


def test_official_dists_weights_come_from_the_weights_dir(tmp_path):
    with pytest.raises(MissingWeightsError, match="DISTS_weights-f5e65c96.pth"):
        create_fidelity("vgg16", alpha_beta="dists", weights_dir=str(tmp_path))
    torch.save({"alpha": torch.ones(1, 1475, 1, 1), "beta": torch.ones(1, 1475, 1, 1)},
               tmp_path / "DISTS_weights-f5e65c96.pth")
    with pytest.raises(WeightsHashError, match="f5e65c96"):  # not the official bytes
        create_fidelity("vgg16", alpha_beta="dists", weights_dir=str(tmp_path))
    with pytest.raises(ValueError, match="calibrated for the ImageNet VGG-16"):
        create_fidelity("resnet50", alpha_beta="dists")
    with pytest.raises(ValueError, match="unknown alpha_beta"):
        create_fidelity("vgg16_r", alpha_beta="lpips")


def test_loss_gradient_reaches_the_generator_not_the_backbone(measures, xy):
    m = measures("resnet50")
    _, y = xy
    gen = nn.Conv2d(3, 3, 3, padding=1)
    y = y.clone().requires_grad_(True)
    out = gen(torch.rand(2, 3, 64, 64))
    loss = m.loss(out, y)
    assert loss.dim() == 0 and torch.isclose(loss, m(out, y).mean(), atol=1e-6)
    per_image = m(out, y)  # forward keeps x's graph too: the SR trainer uses forward(...).mean()
    assert per_image.shape == (2,) and per_image.requires_grad
    loss.backward()
    assert gen.weight.grad is not None and gen.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.parameters())  # frozen backbone, fixed alpha/beta
    assert y.grad is None  # the reference gets no gradient


def test_as_loss_switch_and_eval_mode(measures, xy):
    m = measures("resnet50")
    x, y = xy
    m.train()
    assert not m.backbone.training  # BatchNorm statistics of the loss network never move
    m.as_loss = True
    try:
        x = x.clone().requires_grad_(True)
        out = m(x, y)
        assert out.dim() == 0 and out.requires_grad
    finally:
        m.as_loss = False
        m.eval()


def test_shape_mismatch_is_a_clear_error(measures):
    with pytest.raises(ValueError, match="same shape"):
        measures("vgg16_r")(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 72))


# --- alpha/beta fitting -------------------------------------------------------------------------


def _scored_pairs(n_batches=4, batch=8, seed=0):
    """Distortions mixing a score-relevant one (contrast loss) with an irrelevant one (noise).

    MOS depends only on the contrast loss; the noise level is independent of it, so an
    unfitted measure is distracted by the noise and fitting can do better.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ref = torch.rand(batch, 3, 48, 48, generator=g)
        ref = nn.functional.avg_pool2d(ref, 3, 1, 1)  # some spatial structure
        contrast = torch.rand(batch, generator=g)
        noise = torch.rand(batch, generator=g) * 0.15
        mean = ref.mean((1, 2, 3), keepdim=True)
        dist = mean + (ref - mean) * (1 - 0.9 * contrast.view(-1, 1, 1, 1))
        dist = (dist + noise.view(-1, 1, 1, 1) * torch.randn(ref.shape, generator=g)).clamp(0, 1)
        out.append((dist, ref, 5 - 4 * contrast))  # MOS: higher = better
    return out


@pytest.fixture(scope="module")
def fitted(measures, tmp_path_factory):
    torch.manual_seed(0)
    m = create_fidelity("vgg16_r")
    pairs = _scored_pairs()
    stats = m.fit_alpha_beta(pairs, steps=300, lr=0.05)
    path = m.save_alpha_beta(tmp_path_factory.mktemp("fit") / "ab.pt")
    return m, pairs, stats, path


def test_fit_improves_agreement_with_mos(fitted):
    m, pairs, stats, _ = fitted
    assert stats["n"] == 32
    assert stats["plcc_after"] > stats["plcc_before"] + 0.05, stats
    assert stats["srcc_after"] > 0.8, stats
    a, b = m.normalized_weights()
    assert (m.alpha >= 0).all() and (m.beta >= 0).all()
    assert abs(float(a.sum() + b.sum()) - 1) < 1e-5
    # higher-is-better MOS: distance anti-correlates with it
    d = torch.cat([m(dist, ref) for dist, ref, _ in pairs])
    mos = torch.cat([s for _, _, s in pairs])
    assert np.corrcoef(d.numpy(), mos.numpy())[0, 1] < -0.8


def test_fit_for_dmos_keeps_distance_positively_correlated(fitted):
    m, pairs, _, _ = fitted
    m2 = FidelityMeasure(m.backbone)
    dmos = [(d, r, 10 - s) for d, r, s in pairs]
    stats = fit_alpha_beta(m2, dmos, steps=100, lr=0.05, higher_better=False)
    d = torch.cat([m2(dist, ref) for dist, ref, _ in pairs])
    assert stats["plcc_after"] > 0.5
    assert np.corrcoef(d.numpy(), torch.cat([s for *_, s in dmos]).numpy())[0, 1] > 0.5


def test_saved_alpha_beta_round_trip(fitted):
    m, pairs, _, path = fitted
    m2 = create_fidelity("vgg16_r", alpha_beta=f"file:{path}")
    dist, ref, _ = pairs[0]
    assert torch.allclose(m2(dist, ref), m(dist, ref), atol=1e-6)
    with pytest.raises(ValueError, match="fitted for backbone 'vgg16_r', not 'vgg16'"):
        create_fidelity("vgg16", alpha_beta=f"file:{path}")


def test_alpha_beta_with_wrong_channel_count_is_rejected(tmp_path):
    torch.save({"alpha": torch.ones(1, 1475, 1, 1), "beta": torch.ones(1, 1475, 1, 1)}, tmp_path / "ab.pt")
    with pytest.raises(ValueError, match="needs 3907"):
        create_fidelity("resnet50", alpha_beta=f"file:{tmp_path / 'ab.pt'}")
    with pytest.raises(ValueError, match="no \\(dist, ref, score\\) batches|no"):
        fit_alpha_beta(create_fidelity("vgg16_r"), [], steps=1)


def test_statistics_stay_float32_under_autocast(measures, xy):
    m = measures("vgg16_r")
    x, y = xy
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d_xx, d_xy = m(x, x), m(x, y)
    assert d_xx.dtype == torch.float32 and torch.allclose(d_xx, torch.zeros(2), atol=1e-6)
    assert torch.allclose(d_xy, m(x, y), atol=0.05)  # bf16 features, same measure


# --- DISTS's texture-invariance term ------------------------------------------------------------


def _position_image(h, w):
    """Channel 0/1 hold each pixel's row/column: a crop tells where it was cut."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([ys, xs, torch.zeros_like(ys)])


def test_texture_crop_pairs_are_non_overlapping_crops_of_one_image():
    images = [_position_image(100, 60), _position_image(50, 130), _position_image(140, 140)]
    batches = texture_crop_pairs(images, crop=40, pairs_per_image=20, batch_size=16, seed=1)
    assert [a.shape[0] for a, _ in batches] == [16, 16, 16, 12]
    a = torch.cat([x for x, _ in batches])
    b = torch.cat([y for _, y in batches])
    assert a.shape[1:] == (3, 40, 40)
    ya, xa, yb, xb = a[:, 0, 0, 0], a[:, 1, 0, 0], b[:, 0, 0, 0], b[:, 1, 0, 0]
    apart = ((ya - yb).abs() >= 40) | ((xa - xb).abs() >= 40)
    assert apart.all()
    # crops are contiguous windows of their image, and both axes get used where both are long enough
    assert torch.equal(a[:, 0, :, 0] - ya[:, None], torch.arange(40.0).expand(len(a), 40))
    sq = slice(40, 60)
    assert ((ya[sq] - yb[sq]).abs() >= 40).any() and ((xa[sq] - xb[sq]).abs() >= 40).any()
    again = texture_crop_pairs(images, crop=40, pairs_per_image=20, batch_size=16, seed=1)
    assert all(torch.equal(p, q) for (p, _), (q, _) in zip(batches, again))
    with pytest.raises(ValueError, match="image 1 is 50 x 70; two non-overlapping 40 x 40 crops need a side of at least 80"):
        texture_crop_pairs([_position_image(100, 60), _position_image(50, 70)], crop=40)


def _textures(n=6, size=112, seed=0):
    """Stationary random textures: coloured noise through a random smoothing kernel per channel.
    Two crops of one are different samples of the same texture."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        noise = torch.rand(1, 3, size + 8, size + 8, generator=g)
        k = torch.rand(3, 1, 9, 9, generator=g) ** 4
        tex = nn.functional.conv2d(noise, k / k.sum((2, 3), keepdim=True), groups=3)[0]
        lo, hi = tex.amin((1, 2), keepdim=True), tex.amax((1, 2), keepdim=True)
        out.append((tex - lo) / (hi - lo))
    return out


def test_texture_invariance_term_makes_same_texture_crops_close():
    pairs = _scored_pairs()
    texture = texture_crop_pairs(_textures(), crop=48, pairs_per_image=4, seed=0)
    fits = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        m = create_fidelity("vgg16_r")
        stats = m.fit_alpha_beta(pairs, steps=300, lr=0.05, texture_pairs=texture, texture_weight=weight)
        with torch.no_grad():
            d_texture = torch.cat([m(a, b) for a, b in texture]).mean()
            d_scored = torch.cat([m(d, r) for d, r, _ in pairs]).mean()
        a, b = m.normalized_weights()
        assert (m.alpha >= 0).all() and (m.beta >= 0).all() and abs(float(a.sum() + b.sum()) - 1) < 1e-5
        fits[weight] = stats, float(d_texture), float(d_texture / d_scored), float(a.sum())
    (mos_only, tex_mos_only, ratio_mos_only, share_mos_only), (dists, tex_dists, ratio_dists, share_dists) = fits.values()
    assert mos_only["n_texture"] == 0 and dists["n_texture"] == 24 and dists["texture_weight"] == 1.0
    assert dists["texture_ratio_after"] == pytest.approx(ratio_dists, rel=1e-4)
    assert tex_dists < 0.5 * tex_mos_only, fits  # same-texture crops score much closer
    assert ratio_dists < 0.3 * ratio_mos_only, fits  # ... relative to the distortions, too
    assert share_dists > share_mos_only  # weight moves to the mean (texture) terms, as in DISTS
    assert dists["srcc_after"] > 0.85 and dists["srcc_after"] > mos_only["srcc_after"] - 0.1, fits
    with pytest.raises(ValueError, match="texture_weight must be >= 0"):
        fit_alpha_beta(create_fidelity("vgg16_r"), pairs, steps=1, texture_pairs=texture, texture_weight=-1)
    with pytest.raises(ValueError, match="expected \\(crop_a, crop_b\\)"):
        fit_alpha_beta(create_fidelity("vgg16_r"), pairs, steps=1, texture_pairs=[(texture[0][0],)])
