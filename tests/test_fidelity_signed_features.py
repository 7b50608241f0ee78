"""DISTS-style measures on signed features: on every backbone, random and with weights from a file,
D(x, x) = 0, D(x, y) in [0, 1], D(x, x + noise) rises with the noise level; on non-negative
(ReLU) features the texture term is bit-for-bit DISTS's."""

import itertools

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from skimage import data

from raygrid import spec
from raygrid.nets.backbones import create_backbone
from raygrid.nets.fidelity import C1, FidelityMeasure, create_fidelity

BACKBONES = list(spec.BACKBONES)
NON_NEGATIVE = ("vgg16_r", "vgg16", "resnet50")  # ReLU / L2-pooled maps
SIGNED = ("convnext_tiny", "clip_vit_b16", "swin_tiny", "dinov2_vits14")  # residual-stream maps
NOISE = (0.02, 0.08, 0.3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Sized for one core: on a shared machine, intra-op threads that wait for a busy core made
    these small forwards ~10x slower (measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _random_checkpoint(name: str, path_stem) -> str:
    """A fresh random initialisation of the backbone, saved in the format its library's file hook
    reads (torchvision VGG state dict, timm model state dict, open_clip model state dict)."""
    torch.manual_seed(1234)
    record = spec.BACKBONES[name]
    if record.library == "torchvision":
        net = create_backbone("vgg16", "random")
        path = f"{path_stem}.pth"
        torch.save(net.state_dict(), path)  # keys features.N.*: torchvision's layout
    elif record.library == "timm":
        import timm

        path = f"{path_stem}.safetensors"
        safetensors.torch.save_file(timm.create_model(record.arch, pretrained=False).state_dict(), path)
    else:
        import open_clip

        path = f"{path_stem}.pt"
        torch.save(open_clip.create_model(record.arch, pretrained=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def measures(backbone, tmp_path_factory):
    """Every backbone once with random weights (the session's, as create_fidelity(name) builds
    them) and once from a saved random init (the manifest's `file:PATH` hook), built on first use."""
    cache = {}
    folder = tmp_path_factory.mktemp("weights")

    def get(name: str, source: str):
        if (name, source) not in cache:
            if source == "random":
                cache[name, source] = FidelityMeasure(backbone(name))
            else:
                weights = f"file:{_random_checkpoint(name, folder / name)}"
                cache[name, source] = create_fidelity(name, weights=weights).eval()
        return cache[name, source]

    return get


@pytest.fixture(scope="module")
def images():
    """Two natural images at 64 px (scikit-image's bundled photographs) in [0, 1]."""
    out = []
    for img in (data.astronaut(), data.coffee()):
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()[None] / 255
        out.append(F.interpolate(t, size=(64, 64), mode="area"))
    return torch.cat(out)


def _legacy_texture_term(measure, x, y):
    """DISTS's texture term on the raw channel means, as the published formula computes it."""
    out = []
    for a, b in zip(measure.features(x), measure.features(y)):
        mx, my = a.float().mean((2, 3)), b.float().mean((2, 3))
        out.append((2 * mx * my + C1) / (mx * mx + my * my + C1))
    return torch.cat(out, 1)


@pytest.mark.parametrize("source", ["random", "file"])
@pytest.mark.parametrize("name", BACKBONES)
def test_signed_features_distance_is_zero_bounded_and_rises_with_noise(measures, images, name, source):
    m = measures(name, source)
    x = images
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    a, b = m.normalized_weights()
    noisy = []
    with torch.no_grad():
        assert torch.allclose(m(x, x), torch.zeros(len(x)), atol=1e-6)
        for s in NOISE:
            texture, structure = m.similarity_terms(x, (x + s * noise).clamp(0, 1))
            assert texture.min() >= 0 and texture.max() <= 1 + 1e-6, (name, s, float(texture.min()))
            noisy.append(((1 - texture) * a).sum(1) + ((1 - structure) * b).sum(1))  # = m(x, y)
        other = m(x, x.flip(0))  # another photograph
    for d in [*noisy, other]:
        assert ((d >= 0) & (d <= 1)).all(), (name, source, d)
    for lo, hi in itertools.pairwise(noisy):
        assert (hi > lo).all(), (name, source, [d.tolist() for d in noisy])  # every image, every step
    assert (noisy[0] > 0).all()


@pytest.mark.parametrize("name", NON_NEGATIVE)
def test_signed_features_treatment_is_the_identity_on_relu_features(measures, images, name):
    """ReLU maps are non-negative: the texture term, and so the distance, is DISTS's bit for bit,
    even for an input that overshoots [0, 1] (a generator output)."""
    m = measures(name, "random")
    x = images
    y = x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))  # not clamped
    with torch.no_grad():
        texture, structure = m.similarity_terms(x, y)
        legacy = _legacy_texture_term(m, x, y)
        a, b = m.normalized_weights()
        assert torch.equal(texture, legacy)
        assert torch.equal(m.distance(x, y), ((1 - legacy) * a).sum(1) + ((1 - structure) * b).sum(1))


@pytest.mark.parametrize("name", SIGNED)
def test_signed_features_break_the_published_texture_term(measures, images, name):
    """Why a treatment is needed: on residual-stream maps about half the channel means are negative
    and DISTS's texture term falls towards -1 for a mild noise pair; the treated term stays in [0, 1]."""
    m = measures(name, "random")
    x = images
    y = (x + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    with torch.no_grad():
        feats = m.features(x)[1:]
        negative_share = torch.cat([f.mean((2, 3)) < 0 for f in feats], 1).float().mean()
        legacy = _legacy_texture_term(m, x, y)
        texture, _ = m.similarity_terms(x, y)
    assert 0.3 < negative_share < 0.7, float(negative_share)
    assert legacy.min() < -0.5
    assert texture.min() >= 0
