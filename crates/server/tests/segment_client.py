"""Sends events to a Tenure server with Segment's own Python library
(segment-analytics-python 2.x, from PyPI), as an app would, then prints one
JSON line saying what the library reported. Run by tests/segment_client.rs.

usage: segment_client.py HOST WRITE_KEY
"""

import datetime
import json
import sys

from segment.analytics import Client
from segment.analytics.request import APIError

host, key = sys.argv[1], sys.argv[2]
errors = []


def on_error(e, batch):
    errors.append(f"{e} ({len(batch)} messages)")


BASE = datetime.datetime(2026, 1, 5, 10, 0, 0, tzinfo=datetime.timezone.utc)
N = 250

# The library's own background consumer: batches of up to 100, gzip bodies.
client = Client(
    key,
    host=host,
    gzip=True,
    upload_size=100,
    upload_interval=0.05,
    max_retries=2,
    on_error=on_error,
)
for i in range(N):
    client.track(
        user_id=f"user-{i % 7}",
        event="purchase" if i % 5 == 0 else "view_item",
        properties={"sku": f"sku-{i}", "price": 9.99, "qty": i % 3 + 1, "gift": i % 2 == 0},
        timestamp=BASE + datetime.timedelta(seconds=i),
        message_id=f"py-{i}",
    )
client.identify(user_id="user-1", traits={"plan": "pro"}, timestamp=BASE, message_id="py-identify")
client.page(anonymous_id="anon-9", name="Home", properties={"path": "/"}, timestamp=BASE, message_id="py-page")
client.screen(user_id="user-2", name="Settings", timestamp=BASE, message_id="py-screen")
client.flush()

# An app retrying messages the server already acknowledged: same messageIds,
# other content. The server answers 200 and keeps the first copies.
for i in range(3):
    client.track(user_id="someone-else", event="view_item", properties={"sku": "again"},
                 timestamp=BASE, message_id=f"py-{i}")
# No messageId given: the library makes one up (a UUID).
client.track(user_id="user-3", event="no_explicit_id", timestamp=BASE)
client.flush()
client.join()

# A wrong write key is refused with 401, which the library does not retry.
bad = Client("not-a-key", host=host, sync_mode=True, max_retries=0)
try:
    bad.track(user_id="x", event="e")
    bad_key = {"status": 200}
except APIError as e:
    bad_key = {"status": e.status, "error": str(e)}

print(json.dumps({"errors": errors, "bad_key": bad_key}))
