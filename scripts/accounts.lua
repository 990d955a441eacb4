-- wrk script for `GET /v1/accounts/{id}`: each request reads a random one of ACCOUNTS demo
-- accounts with that account's own API key (`ApiKey::demo(n)` = wf_demo_ + n in 16 digits;
-- `AccountId::demo(n)` = 00000000-0000-4000-8000-<n in 12 hex digits>), as customers would.
--
-- Env: ACCOUNTS (default 1000); DELAY_MS (default 0): a pause before each request of each
-- connection, for an approximately fixed rate of connections * 1000 / (DELAY_MS + latency)
-- requests per second (wrk2 is not packaged; wrk's own latency excludes the pause).
--
-- Ends with one machine-readable line:
--   WRK_RESULT requests=N secs=S req_per_s=R p50_us=A p99_us=B errors=E non_2xx=X
--
-- Run with: ACCOUNTS=1000 wrk -t1 -c32 -d5s -s scripts/accounts.lua http://127.0.0.1:8080
-- against a server started with WAYFARE__LIMITS__ENABLED=false (scripts/bench.sh does):
-- otherwise each key's rate limit ([limits]) answers most requests 429 (non_2xx).

local accounts = tonumber(os.getenv("ACCOUNTS") or "1000")
local delay_ms = tonumber(os.getenv("DELAY_MS") or "0")

local paths = {}
local headers = {}

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  for n = 0, accounts - 1 do
    paths[n] = string.format("/v1/accounts/00000000-0000-4000-8000-%012x", n)
    headers[n] = { ["Authorization"] = string.format("Bearer wf_demo_%016d", n) }
  end
end

function request()
  local n = math.random(0, accounts - 1)
  return wrk.format("GET", paths[n], headers[n])
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local secs = summary.duration / 1000000
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d secs=%.3f req_per_s=%.1f p50_us=%d p99_us=%d errors=%d non_2xx=%d\n",
    summary.requests, secs, summary.requests / secs,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
