"""DVC stage train, and the Hydra entry point for sweeps (movinet.training).

    python pipelines/train.py                         # what `dvc repro train` runs (params.yaml)
    python pipelines/train.py model=a1 train.steps=50  # overrides on top of params.yaml
    python pipelines/train.py -m data.num_frames=8,16 data.frame_stride=1,2   # a grid, one MLflow
                                                                               # parent run, child per job
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from movinet.training.app import train_from_hydra

    return train_from_hydra(cfg)


if __name__ == "__main__":
    main()
