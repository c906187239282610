"""What every SDK check script shares: one check, printed as it passes, fatal when it fails."""

import sys


def check(cond, what, tag=None):
    """Prints `ok: what` when `cond` holds; else prints `FAIL: what` and exits 1.
    `tag` (a run's variant) is shown in brackets after ok / FAIL."""
    label = f" [{tag}]" if tag else ""
    if not cond:
        print(f"FAIL{label}: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok{label}: {what}")
