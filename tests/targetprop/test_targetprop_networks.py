"""ConvNetSpec: geometry of the forward maps and of their inverses."""

import pytest
import torch

from signsym_det.targetprop import ConvNetSpec, build_classifier, build_dtp_classifier


@pytest.mark.parametrize("image_size, kernel_size", [(28, 5), (13, 3), (9, 4)])
def test_each_inverse_maps_a_layer_output_back_to_its_input_shape(image_size, kernel_size):
    spec = ConvNetSpec(
        in_channels=3,
        image_size=image_size,
        num_classes=5,
        channels=(4, 6, 8),
        kernel_size=kernel_size,
        aux_outputs=2,
    )
    net = build_dtp_classifier(spec)
    states = [torch.randn(2, 3, image_size, image_size)]
    for layer in net.layers:
        states.append(layer(states[-1]))
    size = image_size
    for index, channels in enumerate(spec.channels, start=1):
        size = (size + 2 * (kernel_size // 2) - kernel_size) // 2 + 1
        assert states[index].shape == (2, channels, size, size)
    assert states[-1].shape == (2, 7)
    assert sorted(int(key) for key in net.inverses) == [1, 2, 3]
    for index in (1, 2, 3):
        assert net.inverse(index)(states[index + 1]).shape == states[index].shape
    assert net(states[0]).shape == (2, 5)


def test_plain_classifier_has_the_same_forward_keys():
    spec = ConvNetSpec(image_size=8, channels=(3,), kernel_size=3)
    plain, dtp = build_classifier(spec), build_dtp_classifier(spec)
    dtp_forward_keys = {key for key in dtp.state_dict() if key.startswith("layers.")}
    assert set(plain.state_dict()) == dtp_forward_keys


@pytest.mark.parametrize(
    "change, message",
    [
        ({"activation": "sigmoid"}, "valid: tanh, relu, leaky_relu, elu"),
        ({"channels": ()}, "at least one conv"),
        ({"channels": (4, 0)}, "ConvNetSpec 1 must be a positive int"),
        ({"aux_outputs": -1}, "aux_outputs must be an int >= 0"),
        ({"stride": 0}, "stride must be a positive int"),
    ],
)
def test_bad_spec_is_named(change, message):
    with pytest.raises(ValueError, match=message):
        ConvNetSpec(**change)
