"""Traces a pipeline stage for ``tests/test_dvc_deps.py``: put this folder on ``PYTHONPATH`` and set
``MOVINET_TRACE_DIR``; every ``python pipelines/<stage>.py ...`` then writes, at exit, the project
files it opened or listed (Python's audit events ``open``, ``os.listdir``, ``os.scandir``) and the
modules it imported (``sys.modules``) to ``$MOVINET_TRACE_DIR/<script> <args>.json``. Other Python
processes (DVC itself, MLflow's helpers) are left alone."""

import atexit
import json
import os
import sys

_OUT = os.environ.get("MOVINET_TRACE_DIR")
_SCRIPT = sys.argv[0] if sys.argv else ""

if _OUT and os.path.basename(os.path.dirname(os.path.abspath(_SCRIPT))) == "pipelines":
    _opened: set[str] = set()
    _written: set[str] = set()
    _listed: set[str] = set()

    def _hook(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(args[0]))
            mode, flags = args[1] or "r", args[2] or 0
            writing = any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            (_written if writing else _opened).add(path)
        elif event in ("os.listdir", "os.scandir") and args and args[0] is not None:
            if isinstance(args[0], (str, bytes, os.PathLike)):
                _listed.add(os.path.abspath(os.fsdecode(args[0])))

    def _dump() -> None:
        modules = sorted({os.path.abspath(m.__file__) for m in list(sys.modules.values())
                          if getattr(m, "__file__", None)})
        name = " ".join([os.path.basename(_SCRIPT), *sys.argv[1:]])
        record = {"argv": sys.argv, "cwd": os.getcwd(), "opened": sorted(_opened), "written": sorted(_written),
                  "listed": sorted(_listed), "modules": modules}
        with open(os.path.join(_OUT, f"{name}.json"), "w") as f:
            json.dump(record, f, indent=1)

    sys.addaudithook(_hook)
    atexit.register(_dump)
