"""DVC stage train (and train_baseline), and the Hydra entry point for sweeps (movinet.training).

python pipelines/train.py                                 # what `dvc repro train` runs (params.yaml)
python pipelines/train.py model=a1 train.steps=50         # overrides on top of params.yaml
python pipelines/train.py debug=tiny                      # a few steps on tiny clips
python pipelines/train.py -m data.clips.num_frames=8,16   # a grid: one MLflow parent run, a child per job
python pipelines/train.py -m sweep=grid                   # the grid in conf/sweep/grid.yaml (or sweep=optuna)
python pipelines/train.py --help                          # Hydra's help: every config group and key
"""

import sys

import hydra
from omegaconf import DictConfig

from movinet.config.schema import register_configs

register_configs()  # the typed schema conf/config.yaml names (movinet_schema)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from movinet.console import USER_ERRORS, report
    from movinet.training.hydra_job import train_from_hydra

    try:
        return train_from_hydra(cfg)  # the monitored score: what a sweeper optimises
    except USER_ERRORS as exc:  # one line, not Hydra's traceback
        report(exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
