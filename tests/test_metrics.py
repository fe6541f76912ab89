"""The numbers that choose the champion, against values worked out by hand: accuracy, top-5, macro F1,
per-class precision/recall, the confusion matrix (training and evaluation share these definitions),
and the temporal ensemble's average of its members' logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from movinet.inference.ensemble import TemporalEnsemble
from movinet.training.metrics import classification_metrics, confusion_matrix, per_class_table, score


def _logits(predicted: list[int], classes: int) -> torch.Tensor:
    """One-hot-ish logits: the predicted class gets 1, the rest 0 (argmax = predicted)."""
    out = torch.zeros(len(predicted), classes)
    out[torch.arange(len(predicted)), torch.tensor(predicted)] = 1.0
    return out


# 3 classes, 6 clips.   actual:    0 0 0 1 1 2
#                       predicted: 0 0 1 1 2 2
ACTUAL, PREDICTED, CLASSES = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"]


def test_accuracy_macro_f1_and_clip_count_by_hand():
    # correct: clips 0, 1, 3, 5 -> 4/6.  Per class (tp, fp, fn): a (2, 0, 1), b (1, 1, 1), c (1, 1, 0)
    # precision a 1, b 1/2, c 1/2; recall a 2/3, b 1/2, c 1; F1 a 0.8, b 0.5, c 2/3 -> macro 0.65556
    metrics = score(_logits(PREDICTED, 3), torch.tensor(ACTUAL), 3)
    assert metrics == {
        "test_acc": pytest.approx(4 / 6),
        "test_macro_f1": pytest.approx((0.8 + 0.5 + 2 / 3) / 3),
        "test_clips": 6,
    }  # no top-5 with 3 classes (it would be 1.0 by construction)


def test_per_class_table_and_confusion_matrix_by_hand():
    logits, labels = _logits(PREDICTED, 3), torch.tensor(ACTUAL)
    assert per_class_table(logits, labels, CLASSES) == [
        {"class": "a", "precision": 1.0, "recall": 0.6667, "support": 3},
        {"class": "b", "precision": 0.5, "recall": 0.5, "support": 2},
        {"class": "c", "precision": 0.5, "recall": 1.0, "support": 1},
    ]
    # rows actual, columns predicted
    assert confusion_matrix(logits, labels, 3) == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_top5_counts_the_true_class_among_the_five_best():
    # 7 classes; the true class ranks 1st, 5th, 6th and 2nd in the four clips -> top-5 = 3/4, top-1 = 1/4
    ranks = [[0, 1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 0, 5, 6], [1, 2, 3, 4, 5, 0, 6], [2, 0, 1, 3, 4, 5, 6]]
    logits = torch.zeros(4, 7)
    for row, order in enumerate(ranks):
        for place, cls in enumerate(order):
            logits[row, cls] = 10.0 - place
    labels = torch.zeros(4, dtype=torch.long)
    metrics = score(logits, labels, 7, prefix="val")
    assert metrics["val_top5"] == pytest.approx(0.75) and metrics["val_acc"] == pytest.approx(0.25)


def test_training_metrics_accumulate_batches_like_the_whole_split():
    """The LightningModule's metric objects over two batches give the evaluation's numbers."""
    metrics = classification_metrics(3)
    logits, labels = _logits(PREDICTED, 3), torch.tensor(ACTUAL)
    metrics.update(logits[:4], labels[:4])
    metrics.update(logits[4:], labels[4:])
    values = metrics.compute()
    assert float(values["acc"]) == pytest.approx(4 / 6)
    assert float(values["macro_f1"]) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


class _Constant(nn.Module):
    """A member whose logits are fixed numbers plus the sum of the frames it sees (so which frames
    each member gets shows in its output)."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))
        self.num_classes = len(logits)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.logits + clip.sum(dim=(1, 2, 3, 4))[:, None]


def test_ensemble_averages_member_logits_on_their_own_frames():
    members = [_Constant([1.0, 0.0, -1.0]), _Constant([3.0, 2.0, 0.0])]
    ensemble = TemporalEnsemble(members, offsets=[0, 1], stride=2)
    clip = torch.zeros(1, 1, 4, 1, 1)
    clip[0, 0, :, 0, 0] = torch.tensor([1.0, 10.0, 100.0, 1000.0])  # frame values tell the frames apart
    first, second = ensemble.member_logits(clip)
    assert first.tolist() == [[102.0, 101.0, 100.0]]  # frames 0 and 2: 1 + 100
    assert second.tolist() == [[1013.0, 1012.0, 1010.0]]  # frames 1 and 3: 10 + 1000
    assert ensemble(clip).tolist() == [[557.5, 556.5, 555.0]]  # the arithmetic mean, before any softmax


def test_the_evaluation_stage_writes_the_hand_computed_numbers(tmp_path):
    import json

    from movinet.training.evaluate import write_evaluation

    logits, labels = _logits(PREDICTED, 3), torch.tensor(ACTUAL)
    write_evaluation("m", score(logits, labels, 3), logits, labels, CLASSES, tmp_path / "metrics", tmp_path / "plots")
    written = json.loads((tmp_path / "metrics" / "m.json").read_text())
    assert written["test_acc"] == pytest.approx(4 / 6) and written["test_clips"] == 6
    assert list(written) == ["test_acc", "test_macro_f1", "test_clips"]  # as computed, headline first
    assert (tmp_path / "plots" / "m" / "confusion.csv").read_text().splitlines() == [
        "actual,predicted",
        "a,a",
        "a,a",
        "a,b",
        "b,b",
        "b,c",
        "c,c",
    ]
    assert (tmp_path / "plots" / "m" / "per_class.csv").read_text().splitlines() == [
        "class,precision,recall,support",
        "a,1.0,0.6667,3",
        "b,0.5,0.5,2",
        "c,0.5,1.0,1",
    ]


def test_top5_is_micro_averaged_and_only_with_more_than_five_classes():
    # 6 classes, 4 clips of class 0 and 1 of class 5. Class 0's clips rank it 1st, 2nd, 6th, 6th;
    # class 5's clip ranks it 1st. Micro top-5: 3 of 5 clips = 0.6 (macro would average the classes
    # that occur and give (2/4 + 1/1) / 2 = 0.75, or over all six classes less still).
    logits = torch.zeros(5, 6)
    orders = [[0, 1, 2, 3, 4, 5], [1, 0, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0], [5, 4, 3, 2, 1, 0], [5, 0, 1, 2, 3, 4]]
    for row, order in enumerate(orders):
        for place, cls in enumerate(order):
            logits[row, cls] = 10.0 - place
    labels = torch.tensor([0, 0, 0, 0, 5])
    metrics = score(logits, labels, 6)
    assert metrics["test_top5"] == pytest.approx(0.6)
    assert metrics["test_acc"] == pytest.approx(0.4)  # clips 0 and 4
    assert "test_top5" not in score(logits[:, :5], labels.clamp(max=4), 5)  # 5 classes: top-5 is always 1
    assert set(classification_metrics(5).keys()) == {"acc", "macro_f1"}


def test_per_class_table_keeps_classes_without_clips_and_rounds_to_four_places():
    # 4 classes; class "d" has no clip and is never predicted. Precision of "a": 2 of 3 predictions.
    actual, predicted = [0, 0, 1, 2], [0, 0, 0, 2]
    table = per_class_table(_logits(predicted, 4), torch.tensor(actual), ["a", "b", "c", "d"])
    assert table == [
        {"class": "a", "precision": 0.6667, "recall": 1.0, "support": 2},
        {"class": "b", "precision": 0.0, "recall": 0.0, "support": 1},
        {"class": "c", "precision": 1.0, "recall": 1.0, "support": 1},
        {"class": "d", "precision": 0.0, "recall": 0.0, "support": 0},
    ]
    assert confusion_matrix(_logits(predicted, 4), torch.tensor(actual), 4)[3] == [0, 0, 0, 0]
