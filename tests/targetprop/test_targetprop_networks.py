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


def test_locally_connected_switch_keeps_the_geometry_and_unties_the_filters():
    from signsym_det.feedback import LocallyConnected2d

    conv = ConvNetSpec(in_channels=3, image_size=13, num_classes=4, channels=(4, 6))
    local = ConvNetSpec(**{**conv.__dict__, "locally_connected": True})
    conv_layers, local_layers = conv.layers(), local.layers()
    sizes = conv.sizes()
    for index, (a, b) in enumerate(zip(conv_layers[:-1], local_layers[:-1])):
        assert isinstance(a[0], torch.nn.Conv2d) and isinstance(b[0], LocallyConnected2d)
        out, c_out, c_in = sizes[index + 1], a[0].out_channels, a[0].in_channels
        assert b[0].weight.shape == (out, out, c_out, c_in, 5, 5)
    x = torch.randn(2, 3, 13, 13)
    for net in (conv_layers, local_layers):
        h = x
        for layer in net:
            h = layer(h)
        assert h.shape == (2, 4)
    dtp = build_dtp_classifier(local)  # the inverses still map each output back
    h = x
    for index, layer in enumerate(dtp.layers):
        out = layer(h)
        if index > 0:
            assert dtp.inverse(index)(out).shape == h.shape
        h = out
