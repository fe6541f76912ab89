"""DVC stage evaluate_ensemble: members and ensemble on the same test clips
(movinet.training.ensemble) -> metrics/<ensemble.name>.json, plots/<ensemble.name>/.
"""

from movinet.config import load_params, project_root
from movinet.training.ensemble import evaluate_ensemble

if __name__ == "__main__":
    root = project_root()
    metrics = evaluate_ensemble(load_params(root), root, root / "metrics", root / "plots")
    members = ", ".join(f"{k} {v['test_acc']:.4f}" for k, v in metrics["members"].items())
    print(f"ensemble test_acc {metrics['test_acc']:.4f} (members: {members}; "
          f"gain over the best {metrics['gain_over_best_member']:+.4f})")
