"""IQA models: NR/FR outputs, and initialisation from a saved discriminator's trunk."""

import numpy as np
import pytest
import torch

from raygrid.nets.discriminators import create_discriminator
from raygrid.nets.iqa import FRIQAModel, NRIQAModel, create_iqa_model
from raygrid.weights import MissingWeightsError


@pytest.mark.parametrize("backbone", ["vgg16", "resnet50", "dinov2_vits14"])
def test_nr_and_fr_outputs(backbone):
    torch.manual_seed(0)
    nr = create_iqa_model("nr", backbone, init="random").eval()
    fr = create_iqa_model("fr", backbone, init="random").eval()
    assert isinstance(nr, NRIQAModel) and isinstance(fr, FRIQAModel)
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        s = nr(x)
        assert s.shape == (2,) and torch.isfinite(s).all() and s[0] != s[1]
        f = fr(x, y)
        assert f.shape == (2,) and torch.isfinite(f).all()
        # identical images: feature differences vanish, the score is the head's value at zero
        same = fr(y, y)
        assert torch.allclose(same, same[0].expand(2))
    assert nr.lower_better is False and fr.mode == "FR"


def test_fine_tuning_reaches_the_backbone():
    torch.manual_seed(0)
    nr = create_iqa_model("nr", "vgg16_r", init="random")
    nr(torch.rand(2, 3, 48, 48)).sum().backward()
    assert all(p.grad is not None for p in nr.backbone.parameters())


def _perturb(module):
    # stand in for GAN training: weights and BatchNorm statistics move away from init
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.01)


# the GAN trainer's {"discriminator": state_dict, ...} file, and a bare Discriminator state dict
@pytest.mark.parametrize("disc, backbone, wrapped", [("patch_resnet50", "resnet50", True), ("vanilla_vgg16", "vgg16", False)])
def test_init_from_a_saved_discriminator_carries_the_trunk_exactly(tmp_path, disc, backbone, wrapped):
    torch.manual_seed(0)
    d = create_discriminator(disc)
    _perturb(d.trunk)
    path = tmp_path / "gan_ckpt.pt"
    sd = d.state_dict()
    # the trainer's file also holds optimiser and numpy RNG state next to the weights
    state = {"discriminator": sd, "generator": {}, "step": 10, "rng": {"numpy": np.random.get_state()}}
    torch.save(state if wrapped else sd, path)
    torch.manual_seed(1)
    model = create_iqa_model("nr", backbone, init="discriminator", discriminator_checkpoint=str(path))
    trunk = d.trunk.state_dict()
    got = model.backbone.state_dict()
    assert got.keys() == trunk.keys()
    assert all(torch.equal(got[k], trunk[k]) for k in trunk)  # includes BN running statistics
    x = torch.rand(1, 3, 64, 64)
    d.eval(), model.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.backbone(x), d.trunk(x)))


def test_trunk_of_another_backbone_is_a_clear_error(tmp_path):
    path = tmp_path / "patch_resnet50_D.pt"
    torch.save({"discriminator": create_discriminator("patch_resnet50").state_dict()}, path)
    with pytest.raises(ValueError) as e:
        create_iqa_model("fr", "vgg16", init="discriminator", discriminator_checkpoint=str(path))
    msg = str(e.value)
    assert "patch_resnet50_D.pt" in msg and "'patch_resnet50'" in msg and "'vgg16'" in msg
    assert "missing keys" in msg and "unexpected keys" in msg and "features.0.weight" in msg

    torch.save({"discriminator": create_discriminator("vanilla_conv").state_dict()}, path)
    with pytest.raises(ValueError, match="trunk 'conv'"):
        create_iqa_model("nr", "resnet50", init="discriminator", discriminator_checkpoint=str(path))

    torch.save({"generator": {"w": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="no 'trunk"):
        create_iqa_model("nr", "resnet50", init="discriminator", discriminator_checkpoint=str(path))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="needs discriminator_checkpoint"):
        create_iqa_model("nr", "vgg16", init="discriminator")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        create_iqa_model("nr", "vgg16", init="discriminator", discriminator_checkpoint=str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="unknown IQA model kind 'rr'"):
        create_iqa_model("rr", "vgg16")
    with pytest.raises(ValueError, match="unknown init 'gan'"):
        create_iqa_model("nr", "vgg16", init="gan")
    with pytest.raises(MissingWeightsError, match="vgg16-397923af.pth"):
        create_iqa_model("nr", "vgg16", init="imagenet", weights_dir=str(tmp_path))
    with pytest.raises(MissingWeightsError, match="resnet50.a1_in1k.safetensors"):  # a named tag
        create_iqa_model("nr", "resnet50", init="imagenet", weights="a1_in1k", weights_dir=str(tmp_path))
