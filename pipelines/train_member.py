"""DVC stage train_member (a matrix over ensemble.offsets): one temporal-ensemble member
(movinet.training.ensemble_training).

    python pipelines/train_member.py OFFSET    # -> models/<ensemble.name>/members/m<OFFSET>/
"""

import argparse
import sys

from movinet.config import load_config, project_root
from movinet.console import run
from movinet.training.ensemble_training import train_member


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("offset", type=int, help="one of ensemble.offsets")
    offset = parser.parse_args().offset
    root = project_root()
    result = train_member(load_config(root), root, offset)
    print(f"member {offset}: best score {result['score']:.4f}, MLflow run {result['run_id']}")


if __name__ == "__main__":
    sys.exit(run(main))
