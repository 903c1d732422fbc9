"""Small helpers shared by the test folders."""

import time


def wait_for(predicate, seconds: float = 60.0) -> bool:
    """Polls `predicate` until it holds or `seconds` pass (a bound, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False
