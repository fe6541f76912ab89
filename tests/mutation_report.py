"""`make mutate`'s summary: mutmut's results per module, and a failure when one is under the target.

    python tests/mutation_report.py [--target 85]

Reads ``mutmut results --all true`` (run ``mutmut run`` first). A mutant counts as killed when a test
failed on it, or when it made the tests run past mutmut's time limit (a mutant that loops forever).
"No tests" mutants (no test reaches the function) count against the module.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict

KILLED = {"killed", "timeout"}
LINE = re.compile(r"^\s*(?P<name>[\w.]+)\.x\S*__mutmut_\d+: (?P<status>.+)$")


def counts_by_module(text: str) -> dict[str, Counter]:
    modules: dict[str, Counter] = defaultdict(Counter)
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            modules[match["name"]][match["status"].strip()] += 1
    return dict(sorted(modules.items()))


def table(modules: dict[str, Counter], target: float) -> tuple[str, list[str]]:
    rows = ["| module | mutants | killed | timeout | survived | no tests | killed % |", "|---|---|---|---|---|---|---|"]
    below = []
    for name, c in modules.items():
        total = sum(c.values()) - c["skipped"]
        share = 100.0 * sum(c[s] for s in KILLED) / total if total else 100.0
        if share < target:
            below.append(name)
        rows.append(
            f"| `{name}` | {total} | {c['killed']} | {c['timeout']} | {c['survived']} | {c['no tests']} | {share:.1f} |"
        )
    return "\n".join(rows), below


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=85.0, help="killed percentage each module must reach")
    args = parser.parse_args()
    done = subprocess.run(["mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True)
    modules = counts_by_module(done.stdout)
    if not modules:
        print("no mutmut results: run `mutmut run` first", file=sys.stderr)
        return 2
    text, below = table(modules, args.target)
    print(text)
    unfinished = [n for n, c in modules.items() if c["not checked"]]
    if unfinished:
        print(f"not every mutant was run in: {', '.join(unfinished)}", file=sys.stderr)
        return 1
    if below:
        print(f"under {args.target:g} % killed: {', '.join(below)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
