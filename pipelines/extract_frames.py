"""DVC stage extract_frames: decode the videos once into the frame cache (movinet.data.extract)."""

import sys

from movinet.config import load_params, resolve_path
from movinet.data.extract import ExtractionError, extract_videos

if __name__ == "__main__":
    data = load_params()["data"]
    opts = data["extract"]
    try:
        report = extract_videos(resolve_path(data["videos"]), resolve_path(data["frames_dir"]),
                                fps=opts["fps"], size=opts["size"], workers=opts["workers"],
                                strict=opts["strict"])
    except ExtractionError as exc:
        sys.exit(f"error: {exc}")
    print(f"extracted {len(report.extracted)}, unchanged {len(report.unchanged)}, skipped {len(report.skipped)}")
    for skipped in report.skipped:
        print(f"skipped {skipped['file']}: {skipped['reason']}", file=sys.stderr)
