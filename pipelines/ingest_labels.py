"""DVC stage ingest_labels: labels CSV -> per-frame labels, classes, splits (movinet.data.ingest)."""

import sys

from movinet.config import load_params, resolve_path
from movinet.data.ingest import ingest_labels
from movinet.data.labels import LabelError

if __name__ == "__main__":
    data = load_params()["data"]
    opts = data["labels"]
    try:
        summary = ingest_labels(resolve_path(data["labels_csv"]), resolve_path(data["frames_dir"]),
                                resolve_path(data["labels_dir"]), interpolation=opts["interpolation"],
                                on_error=opts["on_error"], seed=opts["split_seed"],
                                fractions=tuple(opts["split_fractions"]))
    except LabelError as exc:
        sys.exit(f"error: {exc}")
    print(f"classes: {', '.join(summary['classes'])}; videos per split: {summary['videos_per_split']}")
