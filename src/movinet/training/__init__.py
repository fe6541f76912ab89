"""Training: the LightningModule, optimizers, the training run and test evaluation."""
