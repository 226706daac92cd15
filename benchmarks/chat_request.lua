-- wrk script for benchmarks/http_load.py: every request is POST /v1/chat/completions with the
-- headers and body the harness passes in the environment (BENCH_HEADERS: "name: value" lines;
-- BENCH_BODY: the chat body), and the summary is printed as one JSON line for the harness.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.body = os.getenv("BENCH_BODY")
for line in os.getenv("BENCH_HEADERS"):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+): (.*)$")
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests": %d, "duration_us": %d, "p50_us": %.1f, "p99_us": %.1f, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
