"""DVC stage evaluate: test-split metrics and plots of a trained model (movinet.training.evaluate).

    python pipelines/evaluate.py NAME     # evaluates models/NAME -> metrics/NAME.json, plots/NAME/
"""

import sys

from movinet.config import project_root
from movinet.training.evaluate import evaluate

if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "video"
    root = project_root()
    metrics = evaluate(root / "models" / name, name, root, root / "metrics", root / "plots")
    print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
