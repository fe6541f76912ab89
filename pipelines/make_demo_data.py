"""DVC stage demo_data: generate the demo videos and labels CSV (movinet.data.demo) from data.generate."""

import argparse
import sys

from movinet.config import load_config, resolve_path
from movinet.console import run
from movinet.data.demo import make_demo_data


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    data = load_config().data
    if data.generate is None:
        raise ValueError(f"data={data.name} has no data.generate section: only the demo data is generated")
    out = resolve_path(data.videos).parent
    make_demo_data(out, data.generate)
    print(f"demo data in {out}")


if __name__ == "__main__":
    sys.exit(run(main))
