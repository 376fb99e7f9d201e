"""Time-driven transitions of `tenure serve --segments` (issue 18): how long
after its due instant each one reaches the NDJSON sink, read by a consumer
tailing the file (so the figure includes the timer, the evaluation, the
journal's and the sink's fsyncs).

N users each get one purchase dated so that their 30th day without a purchase
(`lapsed_buyer = R >= 30d` in queries/triggers.seg) falls in the SPREAD
seconds after a short lead; the script posts them, then tails the sink and
reports the delay of every `lapsed_buyer` entry after its `at`.

    python3 benches/live_timers.py --server target/release/tenure-server \\
        [--users 100000] [--spread 20]
"""
import argparse, base64, datetime, http.client, json, os, subprocess, tempfile, time

p = argparse.ArgumentParser()
p.add_argument("--server", required=True)
p.add_argument("--users", type=int, default=100000)
p.add_argument("--spread", type=float, default=20.0)
p.add_argument("--lead", type=float, default=8.0)
a = p.parse_args()
work = tempfile.mkdtemp(prefix="tenure-live-timers.")
sink = os.path.join(work, "t.ndjson")
here = os.path.dirname(os.path.abspath(__file__))
srv = subprocess.Popen(
    [a.server, "--to", os.path.join(work, "store"), "--wal", os.path.join(work, "wal"),
     "--write-key", "wk", "--listen", "127.0.0.1:0",
     "--segments", os.path.join(here, "..", "queries", "triggers.seg"), "--emit", "ndjson:" + sink],
    stdout=subprocess.PIPE, stderr=open(os.path.join(work, "server.err"), "w"), text=True)
url = srv.stdout.readline().strip().removeprefix("listening on http://")
host, port = url.split(":")
conn = http.client.HTTPConnection(host, int(port))
auth = {"Authorization": "Basic " + base64.b64encode(b"wk:").decode(),
        "Content-Type": "application/json"}


def iso(us):
    return datetime.datetime.fromtimestamp(us / 1e6, datetime.timezone.utc).isoformat()


now = time.time()
base = int((now + a.lead) * 1e6)
day = 86_400_000_000
due = {}
batch = []
for i in range(a.users):
    at = base + int(i * a.spread * 1e6 / a.users)
    due[f"t{i}"] = at
    batch.append({"type": "track", "userId": f"t{i}", "event": "purchase",
                  "messageId": f"t{i}", "timestamp": iso(at - 30 * day),
                  "properties": {"revenue": 10}})
    if len(batch) == 500 or i == a.users - 1:
        conn.request("POST", "/v1/batch", body=json.dumps({"batch": batch}), headers=auth)
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        batch = []
posted = time.time() - now
print(f"posted {a.users} purchases in {posted:.1f} s (lead {a.lead} s)")
delays = []
seen = 0
deadline = time.time() + a.lead + a.spread + 30
with open(sink, "a+") as f:
    f.seek(0)
    buf = ""
    while len(delays) < a.users and time.time() < deadline:
        chunk = f.read()
        if not chunk:
            time.sleep(0.002)
            continue
        t = time.time()
        buf += chunk
        *lines, buf = buf.split("\n")
        for line in lines:
            v = json.loads(line)
            if v["segment"] == "lapsed_buyer" and v["type"] == "segment_entered":
                at = datetime.datetime.fromisoformat(v["at"]).timestamp()
                assert abs(at * 1e6 - due[v["user_id"]]) < 1, (v, due[v["user_id"]])
                delays.append((t - at) * 1000)
srv.terminate()
srv.wait()
delays.sort()
q = lambda f: delays[min(len(delays) - 1, int(round((len(delays) - 1) * f)))]
print(f"lapsed_buyer entries: {len(delays)} of {a.users}, each stamped at its due instant; "
      f"seen in the sink after it: p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {delays[-1]:.1f} ms")
print(open(os.path.join(work, "server.err")).read().strip().splitlines()[-1])
