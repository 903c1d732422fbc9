"""Rewrites the golden files of test_templates.py from the current templates, after a deliberate
template change: review `git diff tests/workloads/golden` before committing. The tests only
compare, so a test run can never make its own golden file pass.

    .venv/bin/python tests/workloads/regenerate_golden.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from test_templates import CASES, GOLDEN, golden_text  # noqa: E402


def main() -> None:
    for case in sorted(CASES):
        path = GOLDEN / f"{case}.yaml"
        text = golden_text(case)
        changed = not path.exists() or path.read_text() != text
        path.write_text(text)
        print(f"{'rewrote' if changed else 'unchanged'} {path}")


if __name__ == "__main__":
    main()
