"""DVC stage evaluate: test-split metrics and plots of a trained model (movinet.training.evaluate).

python pipelines/evaluate.py NAME     # evaluates models/NAME -> metrics/NAME.json, plots/NAME/
"""

import argparse
import sys

from movinet.config import project_root
from movinet.console import run
from movinet.training.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default="video", help="the trained model's folder under models/")
    name = parser.parse_args().name
    root = project_root()
    metrics = evaluate(root / "models" / name, name, root, root / "metrics", root / "plots", root / "reports")
    print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))


if __name__ == "__main__":
    sys.exit(run(main))
