"""Profile API lookups against a running `tenure serve --segments` (issue 18):
`GET /v1/users/{id}` for random users over one keep-alive connection, and
`GET /v1/segments/{name}?limit=100`; prints p50/p99/max in ms.

    python3 benches/live_profile.py --url http://127.0.0.1:8080 --read-key K \\
        --users 10000000 [--prefix u --width 7] [--n 20000] [--segment lapsed_buyer]
"""
import argparse, base64, http.client, random, statistics, time, urllib.parse

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--read-key", required=True)
p.add_argument("--users", type=int, required=True)
p.add_argument("--prefix", default="u")
p.add_argument("--width", type=int, default=0, help="zero-pad ids to this many digits (tenure gen: 7)")
p.add_argument("--n", type=int, default=20000)
p.add_argument("--segment", default="lapsed_buyer")
a = p.parse_args()
u = urllib.parse.urlparse(a.url)
conn = http.client.HTTPConnection(u.hostname, u.port)
auth = {"Authorization": "Basic " + base64.b64encode(f"{a.read_key}:".encode()).decode()}


def timed(path):
    t = time.perf_counter()
    conn.request("GET", path, headers=auth)
    r = conn.getresponse()
    r.read()
    return (time.perf_counter() - t) * 1000, r.status


def report(name, xs):
    xs.sort()
    q = lambda f: xs[min(len(xs) - 1, int(round((len(xs) - 1) * f)))]
    print(f"{name}: n={len(xs)} p50={q(0.5):.2f} ms p99={q(0.99):.2f} ms max={xs[-1]:.2f} ms")


rnd = random.Random(7)
lat, found = [], 0
for _ in range(a.n):
    ms, st = timed(f"/v1/users/{a.prefix}{rnd.randrange(a.users):0{a.width}d}")
    lat.append(ms)
    found += st == 200
report(f"GET /v1/users/{{id}} ({found} found)", lat)
seg = [timed(f"/v1/segments/{a.segment}?limit=100")[0] for _ in range(20)]
report(f"GET /v1/segments/{a.segment}?limit=100", seg)
