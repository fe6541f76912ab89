"""DVC stage evaluate_ensemble: members and ensemble on the same test clips
(movinet.training.ensemble_evaluation) -> metrics/<ensemble.name>.json, plots/<ensemble.name>/,
reports/<ensemble.name>/index.html."""

import argparse
import sys

from movinet.config import load_config, project_root
from movinet.console import run
from movinet.training.ensemble_evaluation import evaluate_ensemble


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    root = project_root()
    metrics = evaluate_ensemble(load_config(root), root, root / "metrics", root / "plots", root / "reports")
    members = ", ".join(f"{k} {v['test_acc']:.4f}" for k, v in metrics["members"].items())
    print(
        f"ensemble test_acc {metrics['test_acc']:.4f} (members: {members}; "
        f"gain over the best {metrics['gain_over_best_member']:+.4f})"
    )


if __name__ == "__main__":
    sys.exit(run(main))
