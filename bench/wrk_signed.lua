-- Replays pre-signed, unique webhook events (one per line: "<Stripe-Signature>\t<body>").
-- Env: WRK_PATH (request path), WRK_REQUESTS (file). Threads take disjoint slices of the file.
-- Prints one line "JSON {...}" with the summary; "wrapped" > 0 means events were re-sent (duplicates).
local threads = {}
local reqs, n, idx = {}, 0, 0
wrapped, non2xx = 0, 0  -- globals: done() reads them with thread:get

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("WRK_PATH")
  local nthreads = #threads > 0 and #threads or 1
  local lineno = 0
  for line in io.lines(os.getenv("WRK_REQUESTS")) do
    if lineno % nthreads == (tid or 0) then
      local tab = line:find("\t", 1, true)
      n = n + 1
      reqs[n] = wrk.format("POST", path, {["Content-Type"] = "application/json",
                                          ["Stripe-Signature"] = line:sub(1, tab - 1)}, line:sub(tab + 1))
    end
    lineno = lineno + 1
  end
end

function request()
  idx = idx + 1
  if idx > n then idx = 1; wrapped = wrapped + 1 end
  return reqs[idx]
end

function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  local w, bad = 0, 0
  for _, t in ipairs(threads) do w = w + t:get("wrapped"); bad = bad + t:get("non2xx") end
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"non2xx":%d,"wrapped":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout, bad, w))
end
