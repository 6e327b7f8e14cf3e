-- wrk script of bench/serving_peers.py: POST one request body read from a file
-- (BODY_FILE, binary-safe), or a bare GET (METHOD=GET, the floor cell), and print the
-- summary as one JSON line.
wrk.method = os.getenv("METHOD") or "POST"
if wrk.method == "POST" then
  local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE")
end
local header_length = os.getenv("HEADER_LENGTH")
if header_length ~= nil and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d,'
      .. ' "p50_us": %f, "p99_us": %f}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
