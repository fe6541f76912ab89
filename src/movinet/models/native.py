"""Our own CPU kernel for the stream step, built on this machine the first time it is needed.

``movinet::feature_step`` (``kernels/feature_step.cpp``) runs a stream block's spatial depthwise conv
and causal temporal conv for one frame in one pass; ``FrameStep`` uses it where it loads, and
oneDNN's conv plus ATen multiply-adds where it does not (same results within float rounding).

It is compiled with ``torch.utils.cpp_extension`` (the C++ compiler named by ``$CXX``, else
``c++``; and ninja) for this CPU (``-march=native``), once, into torch's extension cache
(``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), under a name that carries the CPU's
flags, so a cache shared between different machines never loads code built for another CPU. A build
takes ~15 s; ``make install`` does it up front (``main``).

Without a compiler, or with ``MOVINET_NATIVE_KERNELS=0``, nothing is built: one warning says why,
and the stream step is ~1.2× slower (A2: 10.9 against 8.9 ms a frame, docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import sys
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels") / "feature_step.cpp"
ENV_SWITCH = "MOVINET_NATIVE_KERNELS"


def enabled() -> bool:
    """Whether the user allows the native kernel (``MOVINET_NATIVE_KERNELS=0`` switches it off)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "false", "no", "off"}


def cpu_tag() -> str:
    """A short tag of this CPU's model and instruction-set flags: the build is ``-march=native``."""
    text = platform.machine() + platform.processor()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        text += "".join(sorted({line for line in lines if line.startswith(("flags", "model name", "Features"))}))
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def available() -> bool:
    """Whether ``torch.ops.movinet.feature_step`` can be used: switched on, and built and loaded."""
    return enabled() and load()


@functools.cache
def load() -> bool:
    """Build (first time) and load the kernel; True when ``torch.ops.movinet.feature_step`` is there.

    Never raises: a missing compiler or a failed build is reported once as a warning, and the
    callers keep their ATen path.
    """
    if sys.platform == "win32" or platform.machine().lower() not in {"x86_64", "amd64", "aarch64", "arm64"}:
        _unavailable(f"no build recipe for {sys.platform}/{platform.machine()}")
        return False
    from torch.utils import cpp_extension  # imported here: it is slow to import and rarely needed

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        _unavailable(f"no C++ compiler: {compiler!r} is not on PATH")
        return False
    path = os.environ.get("PATH", "")
    # ninja from pip lives beside this interpreter, which need not be on PATH (.venv/bin/python)
    os.environ["PATH"] = os.pathsep.join([path, str(Path(sys.executable).parent)])
    quiet = logging.getLogger(cpp_extension.__name__)
    level = quiet.level
    try:
        if not cpp_extension.is_ninja_available():
            _unavailable("ninja is not installed")
            return False
        quiet.setLevel(logging.ERROR)  # its compiler-version notes; a failure raises
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cpp_extension.load(
                name=f"movinet_kernels_{cpu_tag()}",
                sources=[str(SOURCE)],
                extra_cflags=["-O3", "-march=native", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
                is_python_module=False,
                verbose=False,
            )
    except Exception as exc:  # noqa: BLE001 - any build failure means: use the ATen path
        _unavailable(_reason(exc))
        return False
    finally:
        quiet.setLevel(level)
        os.environ["PATH"] = path
    return hasattr(torch.ops.movinet, "feature_step")


def _reason(exc: Exception) -> str:
    """The compiler's first error line from a failed build, else the exception's first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() and not line.startswith(("ninja:", "Error building"))]
    return (errors or lines or [type(exc).__name__])[0][:300]


def _unavailable(reason: str) -> None:
    warnings.warn(
        f"movinet's native stream kernel is not available ({reason}); streams use the slower ATen path. "
        f"Install a C++ compiler (g++) and ninja to build it, or set {ENV_SWITCH}=0 to silence this.",
        RuntimeWarning,
        stacklevel=3,
    )


def main() -> None:
    """Build now and say what happened (``make install`` runs it)."""
    if not enabled():
        print(f"movinet native kernel: switched off ({ENV_SWITCH}=0)")
        return
    ok = load()
    print("movinet native kernel: " + ("built and loaded" if ok else "not available (see the warning above)"))
