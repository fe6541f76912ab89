"""DVC stage extract_frames: decode the videos once into the frame cache (movinet.data.extract),
as data.videos and data.extract say."""

import argparse
import sys

from movinet.config import load_config, resolve_path
from movinet.console import run
from movinet.data.extract import extract_videos


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    data = load_config().data
    opts = data.extract
    report = extract_videos(
        resolve_path(data.videos),
        resolve_path(opts.out_dir),
        fps=opts.fps,
        size=opts.size,
        workers=opts.workers,
        strict=opts.strict,
    )
    print(f"extracted {len(report.extracted)}, unchanged {len(report.unchanged)}, skipped {len(report.skipped)}")
    for skipped in report.skipped:
        print(f"skipped {skipped['file']}: {skipped['reason']}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run(main))
