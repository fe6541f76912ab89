"""The temporal ensemble: members see disjoint, offset frames; logits are averaged."""

import pytest
import torch

from conftest import randomize
from movinet.inference.ensemble import TemporalEnsemble
from movinet.models import build


def test_members_see_disjoint_frames_and_logits_average():
    a, b = randomize(build("a0", "base", 4), seed=1), randomize(build("a0", "base", 4), seed=2)
    ensemble = TemporalEnsemble([a, b], offsets=[0, 1], stride=2).eval()
    clip = torch.rand(1, 3, 8, 32, 32)
    with torch.no_grad():
        out = ensemble(clip)
        expected = (a(clip[:, :, 0::2]) + b(clip[:, :, 1::2])) / 2
        assert torch.allclose(out, expected)
        # Changing only the odd frames changes member b's view and never member a's.
        other = clip.clone()
        other[:, :, 1::2] = torch.rand(1, 3, 4, 32, 32)
        la, lb = ensemble.member_logits(other)
        assert torch.equal(la, a(clip[:, :, 0::2])) and not torch.allclose(lb, b(clip[:, :, 1::2]))


def test_invalid_ensembles_are_refused():
    with pytest.raises(ValueError, match="same classes"):
        TemporalEnsemble([build("a0", "base", 3), build("a0", "base", 4)], [0, 1], 2)
    with pytest.raises(ValueError, match=r"offsets must lie in \[0, 2\)"):
        TemporalEnsemble([build("a0", "base", 3)], [2], 2)
