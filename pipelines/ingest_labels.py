"""DVC stage ingest_labels: labels CSV -> per-frame labels, classes, splits (movinet.data.ingest),
as data.labels_csv and data.labels say."""

import argparse
import sys

from movinet.config import load_config, resolve_path
from movinet.console import run
from movinet.data.clips import ClipParams
from movinet.data.ingest import ingest_labels


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    cfg = load_config()
    data = cfg.data
    opts = data.labels
    summary = ingest_labels(
        resolve_path(data.labels_csv),
        resolve_path(data.extract.out_dir),
        resolve_path(opts.out_dir),
        interpolation=opts.interpolation.value,
        on_error=opts.on_error.value,
        seed=opts.split_seed,
        fractions=tuple(opts.split_fractions),
        split_by=opts.split_by.value,
        clips=ClipParams.from_config(cfg),  # refuse now if val or test would have no clip
    )
    print(
        f"classes: {', '.join(summary['classes'])}; videos per split: {summary['videos_per_split']}; "
        f"clips per split: {summary['clips_per_split']}"
    )
    if summary["videos_split_in_time"]:
        print(f"split in time (too few videos of their class): {', '.join(summary['videos_split_in_time'])}")


if __name__ == "__main__":
    sys.exit(run(main))
