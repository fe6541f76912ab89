"""The block tables are right: parameter counts equal the official figures exactly."""

import pytest

from movinet.models import ARCHS, SPECS, build
from movinet.models.layers import make_divisible, same_padding

# Trainable parameters of build(arch, "base", 600): the official MoViNet figures.
OFFICIAL_BASE = {
    "a0": 3_111_799,
    "a1": 4_690_296,
    "a2": 5_249_562,
    "a3": 7_397_545,
    "a4": 11_349_463,
    "a5": 18_650_523,
}
# Stream variant ((2+1)-D convs, SE 2plus3d), counting BN moving statistics, without the
# positional-encoding scales: the figures computed from the TF model definition.
OFFICIAL_STREAM_WITH_BN_STATS = {
    "a0": 3_765_983,
    "a1": 6_481_560,
    "a2": 7_366_050,
    "a3": 11_043_113,
    "a4": 18_228_279,
    "a5": 31_636_675,
}


@pytest.mark.parametrize("arch", ARCHS)
def test_base_trainable_parameters_equal_official(arch):
    model = build(arch, "base", 600)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == OFFICIAL_BASE[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_stream_parameters_equal_tf_model(arch):
    model = build(arch, "stream", 600)
    params = sum(p.numel() for n, p in model.named_parameters() if not n.endswith("pos_scale"))
    stats = sum(b.numel() for n, b in model.named_buffers() if "running_" in n)
    assert params + stats == OFFICIAL_STREAM_WITH_BN_STATS[arch]
    pos_scales = [n for n, _ in model.named_parameters() if n.endswith("pos_scale")]
    assert len(pos_scales) == (len(SPECS[arch].layers()) if arch in ("a3", "a4", "a5") else 0)


def test_layers_per_block():
    counts = {a: [len(b.layers) for b in SPECS[a].blocks] for a in ARCHS}
    assert counts == {
        "a0": [1, 3, 3, 4, 4],
        "a1": [2, 4, 5, 6, 7],
        "a2": [3, 5, 5, 6, 7],
        "a3": [4, 6, 5, 8, 10],
        "a4": [6, 9, 9, 10, 13],
        "a5": [6, 11, 13, 11, 18],
    }


def test_tf_same_padding_is_asymmetric_on_stride_two():
    assert same_padding(172, 3, 2) == (0, 1)
    assert same_padding(172, 5, 2) == (1, 2)
    assert same_padding(171, 3, 2) == (1, 1)
    assert same_padding(11, 3, 1) == (1, 1)


def test_make_divisible_matches_se_widths():
    # SE hidden widths from the spec table (A0 block4_layer3: expand 344 -> 88 base, 176 stream).
    assert make_divisible(0.25 * 344) == 88
    assert make_divisible(0.25 * 2 * 344) == 176
    assert make_divisible(0.25 * 24) == 8


def test_build_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown MoViNet arch 'a9'"):
        build("a9")
    with pytest.raises(ValueError, match="unknown MoViNet variant 'causal'"):
        build("a0", "causal")
