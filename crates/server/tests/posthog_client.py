"""Sends events with PostHog's Python SDK (`posthog` from PyPI) to a Tenure
server: argv[1] is its URL, argv[2] the write key. Prints one JSON line."""
import json
import sys
from datetime import datetime, timedelta, timezone

from posthog import Posthog

host, key = sys.argv[1], sys.argv[2]
errors = []
base = datetime(2026, 1, 5, 10, 0, 0, tzinfo=timezone.utc)


def on_error(e, batch):
    errors.append(str(e))


for gzip in (False, True):
    ph = Posthog(key, host=host, on_error=on_error, gzip=gzip, flush_at=50)
    for i in range(60):
        n = i + (60 if gzip else 0)
        ph.capture(
            "purchase" if n % 5 == 0 else "view_item",
            distinct_id=f"user-{n % 7}",
            properties={"revenue": "12.50", "n": n},
            timestamp=base + timedelta(seconds=n),
            uuid=f"00000000-0000-4000-8000-{n:012d}",
        )
    ph.flush()
    ph.shutdown()

ph = Posthog(key, host=host, on_error=on_error, sync_mode=True)
ph.set(distinct_id="user-1", properties={"plan": "pro"}, timestamp=base)

print(json.dumps({"errors": errors}))
