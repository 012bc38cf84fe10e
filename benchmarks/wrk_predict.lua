-- wrk script of the predict-server benchmark (benchmarks/serving.py):
--   wrk -t T -c C -d S --latency -s wrk_predict.lua URL -- BODIES_FILE
-- Each request POSTs the next JSON event of BODIES_FILE (one per line); every thread cycles
-- through them from its own offset, so concurrent connections send different events.
-- done() prints one JSON line (prefixed "wrk-result ") with the counts and percentiles.

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  requests = {}
  for line in io.lines(args[1]) do
    if line ~= "" then
      requests[#requests + 1] = wrk.format("POST", nil,
        { ["Content-Type"] = "application/json" }, line)
    end
  end
  if #requests == 0 then
    error("no request bodies in " .. args[1])
  end
  next_request = (thread_index * 7919) % #requests
  non_2xx = 0
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

-- wrk itself counts only statuses above 399 as errors: count every non-2xx answer.
function response(status, headers, body)
  if status < 200 or status > 299 then
    non_2xx = non_2xx + 1
  end
end

function done(summary, latency, requests)
  local non_2xx_total = 0
  for _, thread in ipairs(threads) do
    non_2xx_total = non_2xx_total + thread:get("non_2xx")
  end
  local errors = summary.errors
  io.write(string.format(
    'wrk-result {"requests": %d, "duration_us": %d, "non_2xx": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, non_2xx_total, errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
