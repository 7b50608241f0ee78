"""Feature backbones: registry, stage shapes at SR crop sizes, normalisation, weights hooks."""

import math

import pytest
import torch

from raygrid import spec
from raygrid.nets import backbones as bb
from raygrid.nets.backbones import create_backbone

# Every record's declared stage layout, plus the free "timm:" form (ResNet-18's stem + 4 stages).
EXPECTED = {name: (list(b.channels), list(b.reductions)) for name, b in spec.BACKBONES.items()}
EXPECTED["timm:resnet18"] = ([64, 64, 128, 256, 512], [2, 4, 8, 16, 32])
SIZES = [(64, 64), (96, 96), (125, 83)]  # SR crops and an odd validation-image size


@pytest.fixture
def nets(backbone):
    return backbone  # the session's random-weight backbones (tests/conftest.py)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone 'vgg19'"):
        create_backbone("vgg19")
    with pytest.raises(ValueError, match="'resnet5000' is not a timm model"):
        create_backbone("timm:resnet5000")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_stage_shapes(nets, name):
    net = nets(name)
    channels, reductions = EXPECTED[name]
    assert net.channels == channels and net.reductions == reductions and net.name == name
    for h, w in SIZES:
        with torch.no_grad():
            maps = net(torch.rand(1, 3, h, w))
        assert len(maps) == len(channels)
        for f, c, r in zip(maps, channels, reductions):
            assert f.dim() == 4 and f.shape[:2] == (1, c), (name, (h, w), tuple(f.shape))
            # strided convs floor, padded patch embeddings ceil
            assert f.shape[2] in (h // r, math.ceil(h / r)) and f.shape[3] in (w // r, math.ceil(w / r)), (
                name, (h, w), r, tuple(f.shape))
            assert torch.isfinite(f).all()


def test_swin_outputs_are_nchw_not_nhwc(nets):
    maps = nets("swin_tiny")(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in maps] == [(96, 16, 24), (192, 8, 12), (384, 4, 6), (768, 2, 3)]


def test_vit_token_maps_follow_the_input_grid(nets):
    # 125 x 83 pads to 126 x 84 (DINOv2, patch 14) and 128 x 96 (CLIP, patch 16)
    assert nets("dinov2_vits14")(torch.rand(1, 3, 125, 83))[0].shape[-2:] == (9, 6)
    assert nets("clip_vit_b16")(torch.rand(1, 3, 125, 83))[0].shape[-2:] == (8, 6)
    # at the native 224 px (no resampling) the maps are exactly open_clip's own intermediates
    net = nets("clip_vit_b16")
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        ours = net(x)
        ref = net.visual.forward_intermediates((x - net.mean) / net.std, indices=[2, 5, 8, 11],
                                               intermediates_only=True)["image_intermediates"]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, ref))


def test_input_normalisation(nets):
    assert nets("clip_vit_b16").norm.mean == (0.48145466, 0.4578275, 0.40821073)
    for name in ("vgg16", "resnet50", "swin_tiny", "dinov2_vits14"):
        assert nets(name).norm.mean == (0.485, 0.456, 0.406)
    # normalisation happens inside: the first VGG stage sees (x - mean) / std
    net = nets("vgg16")
    x = torch.rand(1, 3, 40, 40)
    xn = (x - net.mean) / net.std
    with torch.no_grad():
        ref = net.features[:4](xn)
        assert torch.allclose(net(x)[0], ref)


def test_bad_inputs(nets):
    net = nets("vgg16_r")
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        net(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="smaller than 32"):
        net(torch.rand(1, 3, 16, 64))


def test_vgg16_r_is_identical_every_build_and_leaves_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = create_backbone("vgg16_r").state_dict()
    assert torch.equal(torch.rand(3), expected_next)  # caller's RNG stream untouched
    torch.manual_seed(999)
    b = create_backbone("vgg16_r", "imagenet").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = create_backbone("vgg16", "random").state_dict()
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


def test_vgg_uses_l2_pooling_in_torchvision_layout(nets):
    feats = nets("vgg16").features
    assert len(feats) == 30
    assert [i for i, m in enumerate(feats) if isinstance(m, bb.L2Pool)] == [4, 9, 16, 23]
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in feats)


def test_vgg16_loads_a_torchvision_file(nets, tmp_path):
    src = nets("vgg16").state_dict()
    sd = {k: v + 1 for k, v in src.items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's full file has a classifier too
    f = tmp_path / "vgg16_custom.pth"
    torch.save(sd, f)
    net = create_backbone("vgg16", f"file:{f}")
    assert all(torch.equal(net.state_dict()[k], src[k] + 1) for k in src)
    torch.save({"conv.weight": torch.zeros(1)}, f)
    with pytest.raises(ValueError, match="features"):
        create_backbone("vgg16", f"file:{f}")


def test_timm_backbone_loads_through_the_timm_file_hook(tmp_path):
    import safetensors.torch
    import timm

    full = timm.create_model("vit_small_patch14_dinov2", pretrained=False)  # the hub file's layout
    safetensors.torch.save_file(full.state_dict(), tmp_path / "vit_small_patch14_dinov2.lvd142m.safetensors")
    net = create_backbone("dinov2_vits14", "imagenet", weights_dir=str(tmp_path))
    got = net.state_dict()  # FeatureGetterNet wraps the ViT: model.model.*
    assert torch.equal(got["model.model.pos_embed"], full.state_dict()["pos_embed"])
    assert torch.equal(got["model.model.blocks.11.mlp.fc2.weight"], full.state_dict()["blocks.11.mlp.fc2.weight"])


def test_a_checkpoint_of_another_model_names_the_file(tmp_path):
    import safetensors.torch
    import timm

    f = tmp_path / "convnext_tiny.fb_in1k.safetensors"
    safetensors.torch.save_file(timm.create_model("resnet18").state_dict(), f)
    with pytest.raises(ValueError, match="convnext_tiny.fb_in1k.safetensors: not a checkpoint of timm model"):
        create_backbone("convnext_tiny", "imagenet", weights_dir=str(tmp_path))
