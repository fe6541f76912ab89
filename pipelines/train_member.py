"""DVC stage train_member (a matrix over ensemble.offsets): one temporal-ensemble member
(movinet.training.ensemble).

    python pipelines/train_member.py OFFSET    # -> models/<ensemble.name>/members/m<OFFSET>/
"""

import sys

from movinet.config import load_params, project_root
from movinet.training.ensemble import train_member

if __name__ == "__main__":
    root = project_root()
    result = train_member(load_params(root), root, int(sys.argv[1]))
    print(f"member {sys.argv[1]}: best score {result['score']:.4f}, MLflow run {result['run_id']}")
