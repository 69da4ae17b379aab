"""Linear / Conv2d learners: what they learn, conv = linear on unfold()ed patches, API, resume."""

import inspect
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from signsym_det import hebbian
from signsym_det.hebbian import Conv2dHebbianLearner, LinearHebbianLearner


def unfolded_patches(images, conv):
    """(batch * positions, C*kh*kw) rows of F.unfold, in the order of the conv weight."""
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    ph, pw = conv.padding
    padded = F.pad(images, (pw, pw, ph, ph), mode=mode)
    columns = F.unfold(padded, conv.kernel_size, dilation=conv.dilation, stride=conv.stride)
    return columns.transpose(1, 2).reshape(-1, columns.shape[1])


def make_conv(generator, padding_mode="zeros"):
    conv = nn.Conv2d(3, 6, (3, 2), (2, 1), (1, 1), (1, 2), padding_mode=padding_mode)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
    return conv


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_units_find_the_centres_of_well_separated_clusters(seed):
    # Competitive learning can trap one unit between two clusters for an unlucky start; with
    # orthogonal centres and 8x more units than clusters that is rare (1 seed in 20 here).
    generator = torch.Generator().manual_seed(seed)
    centres = torch.linalg.qr(torch.randn(16, 4, generator=generator)).Q.T  # (4, 16)
    layer = nn.Linear(16, 32, bias=False)
    with torch.no_grad():
        layer.weight.copy_(F.normalize(torch.randn(32, 16, generator=generator), dim=1))
    assert (centres @ F.normalize(layer.weight, dim=1).T).max() < 0.8
    learner = LinearHebbianLearner(layer, total_steps=100, eps0=0.05)
    for _ in range(100):
        cluster = torch.randint(4, (100,), generator=generator)
        learner.step(centres[cluster] + 0.1 * torch.randn(100, 16, generator=generator))
    best_cosine = (centres @ F.normalize(layer.weight, dim=1).T).max(dim=1).values
    assert best_cosine.min() > 0.9, best_cosine


@pytest.mark.parametrize(
    "padding_mode, patch_norm",
    [("zeros", None), ("zeros", "zero_mean_unit_norm"), ("reflect", "unit_norm")],
)
def test_conv_learner_equals_linear_learner_on_unfolded_patches(padding_mode, patch_norm):
    generator = torch.Generator().manual_seed(0)
    conv = make_conv(generator, padding_mode).double()
    linear = nn.Linear(18, 6, bias=False).double()
    with torch.no_grad():
        linear.weight.copy_(conv.weight.reshape(6, -1))
    bias = conv.bias.detach().clone()
    conv_learner = Conv2dHebbianLearner(conv, total_steps=5, patch_norm=patch_norm, k=3)
    linear_learner = LinearHebbianLearner(linear, total_steps=5, k=3)
    for _ in range(3):
        images = torch.randn(2, 3, 7, 8, generator=generator, dtype=torch.float64)
        patches = unfolded_patches(images, conv)
        if patch_norm == "zero_mean_unit_norm":
            patches = patches - patches.mean(1, keepdim=True)
        if patch_norm is not None:
            patches = patches / patches.norm(dim=1, keepdim=True)
        conv_learner.step(images)
        linear_learner.step(patches)
        torch.testing.assert_close(conv.weight.reshape(6, -1), linear.weight)
    assert torch.equal(conv.bias, bias)
    assert type(conv) is nn.Conv2d and conv.weight.grad is None and conv.weight.requires_grad


def test_sub_sampled_patches_are_distinct_patches_of_the_input():
    generator = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, stride=2)
    learner = Conv2dHebbianLearner(conv, total_steps=5, max_patches=10, generator=generator)
    images = torch.randn(2, 3, 9, 9, generator=generator)
    all_patches = unfolded_patches(images, conv)  # 2 * 4 * 4 = 32 patches
    first, second = learner.gather_patches(images), learner.gather_patches(images)
    for sampled in (first, second):
        assert sampled.shape == (10, 27)
        equal = (sampled[:, None, :] == all_patches[None, :, :]).all(dim=2)  # (10, 32)
        assert (equal.sum(dim=1) == 1).all()  # each one is exactly one patch of the input
        assert (equal.sum(dim=0) <= 1).all()  # drawn without replacement
    assert not torch.equal(first, second)


def test_seeded_runs_are_reproducible():
    def run(seed):
        conv = make_conv(torch.Generator().manual_seed(0))
        generator = torch.Generator().manual_seed(seed)
        learner = Conv2dHebbianLearner(conv, total_steps=4, max_patches=20, generator=generator)
        images = torch.randn(4, 2, 3, 7, 8, generator=torch.Generator().manual_seed(1))
        for batch in images:
            learner.step(batch)
        return conv.weight.detach()

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_resume_from_state_dicts_continues_the_same_run():
    images = torch.randn(6, 2, 3, 7, 8, generator=torch.Generator().manual_seed(1))

    def fresh(seed):
        conv = make_conv(torch.Generator().manual_seed(0))
        generator = torch.Generator().manual_seed(seed)
        return conv, Conv2dHebbianLearner(conv, 6, max_patches=20, generator=generator, delta=0.2)

    conv, learner = fresh(seed=0)
    for batch in images:
        learner.step(batch)

    half_conv, half_learner = fresh(seed=0)
    for batch in images[:3]:
        half_learner.step(batch)
    buffer = io.BytesIO()
    torch.save({"layer": half_conv.state_dict(), "learner": half_learner.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed_conv, resumed = fresh(seed=123)
    resumed_conv.load_state_dict(saved["layer"])
    resumed.load_state_dict(saved["learner"])
    assert resumed.steps_done == 3
    for batch in images[3:]:
        resumed.step(batch)
    assert torch.equal(resumed_conv.weight, conv.weight)

    other = Conv2dHebbianLearner(make_conv(torch.Generator()), 6, delta=0.3)
    with pytest.raises(ValueError, match=r"saved learner has delta=0.2, this one delta=0.3"):
        other.load_state_dict(saved["learner"])


def test_stepping_past_the_schedule_raises():
    learner = LinearHebbianLearner(nn.Linear(4, 3), total_steps=1)
    learner.step(torch.randn(5, 4))
    with pytest.raises(RuntimeError, match=r"all 1 steps are done"):
        learner.step(torch.randn(5, 4))


def test_the_api_takes_no_labels():
    label_words = ("label", "target", "class", "y")
    callables = [hebbian.krotov_hopfield_delta, LinearHebbianLearner, Conv2dHebbianLearner]
    callables += [LinearHebbianLearner.step, Conv2dHebbianLearner.step]
    for function in callables:
        for name in inspect.signature(function).parameters:
            assert not any(word == name or word in name.split("_") for word in label_words), name
    assert list(inspect.signature(Conv2dHebbianLearner.step).parameters) == ["self", "inputs"]


def test_bad_learner_arguments_raise_clear_errors():
    with pytest.raises(TypeError, match=r"LinearHebbianLearner trains a Linear, got Conv2d"):
        LinearHebbianLearner(nn.Conv2d(3, 4, 3), total_steps=10)
    with pytest.raises(ValueError, match=r"k must be an int in \[2, 4\] \(hidden units\), got 5"):
        Conv2dHebbianLearner(nn.Conv2d(3, 4, 3), total_steps=10, k=5)
    with pytest.raises(ValueError, match=r"groups=1 .*got groups=2"):
        Conv2dHebbianLearner(nn.Conv2d(4, 4, 3, groups=2), total_steps=10)
    with pytest.raises(ValueError, match=r"max_patches needs a torch.Generator"):
        Conv2dHebbianLearner(nn.Conv2d(3, 4, 3), total_steps=10, max_patches=100)
    with pytest.raises(ValueError, match=r"max_patches must be None or an int >= 1, got 0"):
        Conv2dHebbianLearner(nn.Conv2d(3, 4, 3), 10, max_patches=0, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"patch_norm 'l2' is not one of \(None, 'zero_mean'"):
        Conv2dHebbianLearner(nn.Conv2d(3, 4, 3), total_steps=10, patch_norm="l2")
    with pytest.raises(
        ValueError, match=r"inputs must be \(batch, 3, H, W\), got shape \(2, 4, 5, 5\)"
    ):
        Conv2dHebbianLearner(nn.Conv2d(3, 4, 3), total_steps=10).step(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"with 6 values per sample \(in_features\), got shape"):
        LinearHebbianLearner(nn.Linear(6, 4), total_steps=10).step(torch.randn(2, 5))


# meta runs everywhere: a tensor the learner makes on the CPU instead of the weight's device
# raises there, as it would on CUDA. CUDA, where present, must also match the CPU's numbers.
@pytest.mark.parametrize("device", ["meta"] + (["cuda"] if torch.cuda.is_available() else []))
def test_runs_on_the_weights_device(device):
    images = torch.randn(3, 2, 3, 7, 8, generator=torch.Generator().manual_seed(1))

    def run(device):
        conv = make_conv(torch.Generator().manual_seed(0)).double().to(device)
        learner = Conv2dHebbianLearner(conv, total_steps=3, patch_norm="unit_norm")
        for batch in images.double().to(device):
            learner.step(batch)
        return conv.weight.detach()

    weight = run(device)
    assert weight.device.type == device and weight.dtype == torch.float64
    if device != "meta":
        torch.testing.assert_close(weight.cpu(), run("cpu"))
