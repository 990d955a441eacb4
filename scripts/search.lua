-- wrk script for anonymous hotel searches: each request is a random line of the file
-- SEARCH_QUERIES (query strings such as city=Lisbon&check_in=2027-03-10&check_out=2027-03-12),
-- sent to SEARCH_PATH (default /v1/search/hotels; the twin in examples/baseline_server.rs
-- also serves /v1/search/hotels/prebuilt). No credential: wayfare's search is anonymous.
--
-- Ends with the same machine-readable line as scripts/accounts.lua:
--   WRK_RESULT requests=N secs=S req_per_s=R p50_us=A p99_us=B errors=E non_2xx=X
--
-- Run with: SEARCH_QUERIES=queries.txt wrk -t1 -c32 -d5s -s scripts/search.lua http://127.0.0.1:8080
-- against a server started with WAYFARE__LIMITS__ENABLED=false (scripts/bench-twins.sh does):
-- otherwise the per-address rate limit ([limits]) answers most requests 429 (non_2xx).

local path = os.getenv("SEARCH_PATH") or "/v1/search/hotels"
local file = os.getenv("SEARCH_QUERIES") or error("set SEARCH_QUERIES to a file of query strings")

local prepared = {}

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  for line in io.lines(file) do
    if line ~= "" then
      prepared[#prepared + 1] = wrk.format("GET", path .. "?" .. line)
    end
  end
  if #prepared == 0 then
    error(file .. " holds no query")
  end
end

function request()
  return prepared[math.random(1, #prepared)]
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
