"""The LightningModule: a MoViNet classifier with the project's metrics for training and validation.

Test-split metrics, per-class tables and the confusion matrix come from ``movinet.training.evaluate``
(one pass over the fixed evaluation clips, written for DVC and MLflow alike). The learning rate is
logged by Lightning's ``LearningRateMonitor`` (the scheduler is named ``lr``).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import SumMetric

from movinet.models import MoViNet, build
from movinet.training.metrics import classification_metrics
from movinet.training.optim import build_optimizer, optim_config, trainable_parameters, warmup_cosine


class VideoClassifier(L.LightningModule):
    """Its arguments are plain values (``optim`` a dict): Lightning keeps them in the checkpoint."""

    def __init__(
        self,
        arch: str,
        variant: str,
        class_names: list[str],
        dropout: float | None = None,
        optim: dict | None = None,
        steps: int = 100,
        label_smoothing: float = 0.0,
        freeze_backbone: bool = False,
        bn_momentum: float = 0.1,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.class_names = list(class_names)
        n = len(self.class_names)
        self.model: MoViNet = build(arch, variant, n, dropout)
        self.model.set_bn_momentum(bn_momentum)
        if channels_last:  # the model then lays its inputs out the same way (MoViNet.forward)
            self.model = self.model.to(memory_format=torch.channels_last_3d)
            self.model.channels_last = True
        self.train_metrics = classification_metrics(n).clone(prefix="train_")
        self.val_metrics = classification_metrics(n).clone(prefix="val_")
        # Clips validated, summed over ranks: under DDP each val clip must count exactly once.
        self.val_clips = SumMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, _idx):
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.log("train_loss", loss, on_step=True, prog_bar=True, batch_size=len(y))
        self.train_metrics["acc"](logits, y)  # forward: this batch's value, logged per step
        self.log("train_acc", self.train_metrics["acc"], on_step=True, on_epoch=False, batch_size=len(y))
        return loss

    def validation_step(self, batch, _idx):
        x, y = batch
        logits = self.model(x)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y), sync_dist=True)
        self.val_metrics.update(logits, y)
        self.val_clips.update(torch.tensor(float(len(y)), device=y.device))

    def on_validation_epoch_end(self) -> None:
        # compute() gathers every rank's state, so each rank holds the global value (sync_dist: no-op mean)
        for name, value in self.val_metrics.compute().items():
            self.log(name, value, prog_bar=name == "val_acc", sync_dist=True)
        self.log("val_clips", self.val_clips.compute(), sync_dist=True)
        self.val_metrics.reset()
        self.val_clips.reset()

    def configure_optimizers(self):
        optim = optim_config(dict(self.hparams.optim or {"name": "adamw"}))
        optimizer = build_optimizer(trainable_parameters(self.model, self.hparams.freeze_backbone), optim)
        schedule = warmup_cosine(optimizer, optim.warmup_steps, self.hparams.steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "name": "lr"}}
