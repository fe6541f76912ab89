"""Writes that never leave a half-written file: a temporary file beside the target, then a rename.

A stage killed mid-write (or a disk that fills) leaves the previous file or none, never a truncated
one that DVC would cache or the next stage would read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data, sort_keys: bool = True) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=sort_keys))
