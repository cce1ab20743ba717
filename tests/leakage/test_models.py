import pytest
import torch

from leakage.errors import UnknownNameError
from leakage.models import MODEL_NAMES, build_model


def test_lenet_matches_the_dlg_paper():
    model = build_model("lenet", num_classes=10, in_channels=3, image_size=32, seed=0)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (12, (5, 5), (2, 2), (2, 2)), (12, (5, 5), (2, 2), (2, 2)), (12, (5, 5), (1, 1), (2, 2))]
    assert sum(isinstance(m, torch.nn.Sigmoid) for m in model.modules()) == 3
    fc = model.fc
    assert isinstance(fc, torch.nn.Linear)
    assert fc.in_features == 768
    for p in model.parameters():
        assert p.min() >= -0.5 and p.max() <= 0.5
    # uniform(-0.5, 0.5) should fill the range, not sit in a narrow band
    assert fc.weight.abs().max() > 0.49
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(3, 32), (1, 16), (3, 8)])
def test_models_are_seeded_and_shaped(name, shape):
    channels, size = shape
    a = build_model(name, num_classes=7, in_channels=channels, image_size=size, seed=3)
    b = build_model(name, num_classes=7, in_channels=channels, image_size=size, seed=3)
    c = build_model(name, num_classes=7, in_channels=channels, image_size=size, seed=4)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    assert a(torch.rand(3, channels, size, size)).shape == (3, 7)


def test_mlp_first_layer_is_linear_with_bias():
    model = build_model("mlp", num_classes=10, image_size=8, seed=0, width=64)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert first.in_features == 3 * 8 * 8 and first.bias is not None


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        build_model("resnet152")
    message = str(info.value)
    assert "resnet152" in message
    for name in MODEL_NAMES:
        assert name in message
