"""DVC stage register (a matrix over register.models): log an evaluated model as a video pyfunc,
register a new version with its test metrics, promote it if better (movinet.tracking.registration).

    python pipelines/register.py SOURCE    # models/SOURCE + metrics/SOURCE.json -> models/registry/SOURCE.json
"""

import argparse
import sys

from movinet.config import load_config, project_root
from movinet.console import run
from movinet.files import write_json_atomic
from movinet.tracking.registration import register_evaluated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="an evaluated model: models/SOURCE with metrics/SOURCE.json")
    source = parser.parse_args().source
    root = project_root()
    result = register_evaluated(load_config(root), root, source)
    write_json_atomic(root / "models" / "registry" / f"{source}.json", result)
    print(
        f"registered {result['name']} v{result['version']} ({result['source']}): "
        f"{result.get('promotion', 'promotion off')}"
    )


if __name__ == "__main__":
    sys.exit(run(main))
