"""The LightningModule: a MoViNet classifier with torchmetrics for every split.

Per-class precision/recall and the confusion matrix are computed on the test split by
``movinet.training.evaluate`` (one pass, written for DVC and MLflow alike).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from movinet.models import MoViNet, build
from movinet.training.optim import build_optimizer, trainable_parameters, warmup_cosine


def split_metrics(num_classes: int) -> MetricCollection:
    metrics = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "macro_f1": MulticlassF1Score(num_classes, average="macro"),
    }
    if num_classes >= 5:
        metrics["top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)


class VideoClassifier(L.LightningModule):
    def __init__(
        self, arch: str, variant: str, class_names: list[str], dropout: float | None = None,
        optim: dict | None = None, steps: int = 100, label_smoothing: float = 0.0,
        freeze_backbone: bool = False, bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.class_names = list(class_names)
        n = len(self.class_names)
        self.model: MoViNet = build(arch, variant, n, dropout)
        self.model.set_bn_momentum(bn_momentum)
        # ModuleDict keys must not shadow Module attributes ("train"): prefix them.
        self.metrics = torch.nn.ModuleDict({f"m_{s}": split_metrics(n) for s in ("train", "val", "test")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, _idx):
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.metrics["m_train"]["acc"].update(logits, y)
        self.log("train_loss", loss, on_step=True, prog_bar=True, batch_size=len(y))
        self.log("train_acc", self.metrics["m_train"]["acc"], on_step=True, on_epoch=False, batch_size=len(y))
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True)
        return loss

    def _eval_step(self, batch, split: str) -> None:
        x, y = batch
        logits = self.model(x)
        self.log(f"{split}_loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
        self.metrics[f"m_{split}"].update(logits, y)

    def validation_step(self, batch, _idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, _idx):
        self._eval_step(batch, "test")

    def _log_split(self, split: str) -> None:
        for name, value in self.metrics[f"m_{split}"].compute().items():
            self.log(f"{split}_{name}", value, prog_bar=name == "acc")
        self.metrics[f"m_{split}"].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    def configure_optimizers(self):
        params = trainable_parameters(self.model, self.hparams.freeze_backbone)
        optimizer = build_optimizer(params, self.hparams.optim)
        schedule = warmup_cosine(optimizer, self.hparams.optim.get("warmup_steps", 0), self.hparams.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
