"""POST -> confirmed latency of every booking of the first N demo accounts, read from each
saga's own history through the operator API (pages of `/v1/accounts/{id}/bookings`).

Usage: python3 scripts/booking_latency.py URL [ACCOUNTS]   (token in WAYFARE__ADMIN__TOKEN)
Prints the states seen and p50/p90/p99/max in milliseconds.
"""
import json
import os
import sys
import urllib.request
from datetime import datetime

url = sys.argv[1]
accounts = int(sys.argv[2]) if len(sys.argv) > 2 else 10
AUTH = {"Authorization": "Bearer " + os.environ["WAYFARE__ADMIN__TOKEN"]}


def at(text):
    # RFC 3339 in UTC with 0 to 9 fractional digits (chrono prints none, 3, 6 or 9): to µs.
    whole, _, frac = text.rstrip("Z").split("+")[0].partition(".")
    return datetime.fromisoformat(f"{whole}.{(frac + '000000')[:6]}+00:00")


lat, states = [], {}
for n in range(accounts):
    acct = "00000000-0000-4000-8000-%012x" % n
    after = None
    while True:
        page_url = f"{url}/v1/accounts/{acct}/bookings?limit=100"
        if after:
            page_url += f"&after={after}"
        page = json.load(urllib.request.urlopen(urllib.request.Request(page_url, headers=AUTH)))
        for b in page["bookings"]:
            states[b["state"]] = states.get(b["state"], 0) + 1
            h = {e["state"]: e["at"] for e in b["history"]}
            if "confirmed" in h:
                lat.append((at(h["confirmed"]) - at(b["history"][0]["at"])).total_seconds() * 1000)
        after = page.get("next_after")
        if not after:
            break
lat.sort()


def q(p):
    return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")


print(
    f"states {states}; POST->confirmed ms over {len(lat)}: "
    f"p50 {q(0.5):.1f} p90 {q(0.9):.1f} p99 {q(0.99):.1f} max {lat[-1] if lat else 0:.1f}"
)
