"""DVC stage register (a matrix over register.models): log an evaluated model as a video pyfunc,
register a new version with its test metrics, promote it if better (movinet.tracking.register).

    python pipelines/register.py SOURCE    # models/SOURCE + metrics/SOURCE.json -> models/registry/SOURCE.json
"""

import sys

from movinet.config import load_params, project_root
from movinet.files import write_json_atomic
from movinet.tracking.register import register_evaluated

if __name__ == "__main__":
    root = project_root()
    result = register_evaluated(load_params(root), root, sys.argv[1])
    out = root / "models" / "registry" / f"{sys.argv[1]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, result)
    print(f"registered {result['name']} v{result['version']} ({result['source']}): "
          f"{result.get('promotion', 'promotion off')}")
