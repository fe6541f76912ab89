"""Output shapes at each model's resolution and at odd sizes; TF padding semantics."""

import pytest
import torch
import torch.nn.functional as F

from conftest import randomize
from movinet.models import ARCHS, SPECS, build
from movinet.models.layers import Skip


@pytest.mark.parametrize("arch", ARCHS)
def test_base_output_shape_at_eval_resolution(arch):
    res = SPECS[arch].resolution
    model = build(arch, "base", 7).eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 3, 2, res, res))
    assert out.shape == (1, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", ["base", "stream"])
@pytest.mark.parametrize("arch", ["a0", "a3"])
def test_odd_non_square_input(arch, variant):
    model = randomize(build(arch, variant, 5))
    with torch.inference_mode():
        out = model(torch.rand(2, 3, 3, 171, 203))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


def test_stream_state_shapes_follow_the_spec():
    # Reference: A0-Stream at 172x172 has buffers (2,22,22,80) at block1 and (4,6,6,384) at block4.
    state = build("a0", "stream").init_state(1)
    assert state["b1_l0.buffer"].shape == (1, 80, 2, 22, 22)
    assert state["b2_l0.buffer"].shape == (1, 184, 4, 11, 11)
    assert state["b4_l0.buffer"].shape == (1, 384, 4, 6, 6)
    assert "b4_l1.buffer" not in state  # (1,5,5) kernels have no temporal buffer
    assert state["head.sum"].shape == (1, 480)


def test_skip_pool_excludes_padding_like_tf():
    skip = Skip(1, 1, 2)
    skip.proj = torch.nn.Identity()
    x = torch.arange(16.0).reshape(1, 1, 1, 4, 4)
    out = skip(x)[0, 0, 0]
    # Even side: TF pads (0, 1); the last row/column average only the real cells.
    assert out[0, 0].item() == pytest.approx(x[0, 0, 0, 0:3, 0:3].mean().item())
    assert out[1, 1].item() == pytest.approx(x[0, 0, 0, 2:4, 2:4].mean().item())  # corner: 4 cells
    assert out[0, 1].item() == pytest.approx(x[0, 0, 0, 0:3, 2:4].mean().item())  # edge: 6 cells
    # Odd side: (1, 1) padding, still excluded.
    y = torch.arange(9.0).reshape(1, 1, 1, 3, 3)
    assert skip(y)[0, 0, 0, 0, 0].item() == pytest.approx(y[0, 0, 0, 0:2, 0:2].mean().item())
    # Inputs smaller than the kernel (tiny clips deep in the net) follow the same rule.
    z = torch.arange(4.0).reshape(1, 1, 1, 2, 2)
    assert skip(z).flatten().tolist() == [pytest.approx(1.5)]
    w = torch.arange(6.0).reshape(1, 1, 1, 2, 3)
    assert skip(w).flatten().tolist() == [pytest.approx(2.0), pytest.approx(3.0)]  # (0,1,3,4), (1,2,4,5)


def test_strided_conv_pads_after_like_tf():
    model = build("a0", "base", 3).eval()
    stem = model.stem
    x = torch.rand(1, 3, 1, 8, 8)
    ref = F.conv3d(F.pad(x, (0, 1, 0, 1)), stem.conv.weight, stride=(1, 2, 2))  # (0,1) padding
    assert torch.allclose(stem.act(stem.bn(ref)), stem(x), atol=1e-6)


def test_reset_classifier_changes_only_the_last_layer():
    model = build("a0", "base", 600)
    hidden = model.classifier.hidden.weight.clone()
    model.reset_classifier(4)
    assert model.num_classes == 4
    assert torch.equal(model.classifier.hidden.weight, hidden)
    with torch.inference_mode():
        assert model.eval()(torch.rand(1, 3, 2, 32, 32)).shape == (1, 4)


def test_stochastic_depth_only_in_training():
    """With the classifier's dropout at 0, what makes two training passes differ is stochastic depth
    alone: they differ, and they agree once every block's drop rate is 0. In eval nothing is dropped."""
    model = randomize(build("a0", "base", 3, dropout=0.0))
    assert all(block.drop_rate > 0 for block in model.blocks.values())
    x = torch.rand(4, 3, 2, 32, 32, generator=torch.Generator().manual_seed(0))

    def two_training_passes():
        outputs = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            outputs.append(model(x))
        return outputs

    with torch.no_grad(), torch.random.fork_rng():
        assert torch.equal(model(x), model(x))
        model.train()
        a, b = two_training_passes()
        assert not torch.equal(a, b)
        for block in model.blocks.values():
            block.drop_rate = 0.0
        c, d = two_training_passes()
    assert torch.equal(c, d)


def test_channels_last_training_option_computes_the_same():
    """train.channels_last: the same logits and gradients as the default layout, in the other layout."""
    from movinet.training.module import VideoClassifier

    torch.manual_seed(0)
    plain = VideoClassifier("a0", "base", ["a", "b", "c"])
    fast = VideoClassifier("a0", "base", ["a", "b", "c"], channels_last=True)
    fast.load_state_dict(plain.state_dict())
    weight = fast.model.stem.conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last_3d) and not weight.is_contiguous()
    x, y = torch.rand(2, 3, 4, 32, 32), torch.tensor([0, 2])
    losses = []
    for model in (plain, fast):
        torch.manual_seed(1)  # the same dropout and stochastic-depth draws
        losses.append(torch.nn.functional.cross_entropy(model.train()(x), y))
        losses[-1].backward()
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    grads = [m.model.stem.conv.weight.grad for m in (plain, fast)]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
