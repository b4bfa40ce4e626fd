-- Pre-signed webhook requests for wrk: each thread sends its own slice of the file, each request once.
-- File lines: webhook-id <TAB> webhook-timestamp <TAB> webhook-signature <TAB> JSON body.
-- Usage: wrk -s bench/wrk/post.lua URL -- FILE THREADS
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  requests = {}
  sent = 0
  wrapped = 0
  local line_number = 0
  for line in io.lines(file) do
    if line_number % nthreads == id then
      local mid, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      local headers = {
        ["content-type"] = "application/json",
        ["webhook-id"] = mid,
        ["webhook-timestamp"] = ts,
        ["webhook-signature"] = sig,
      }
      requests[#requests + 1] = wrk.format("POST", "/webhooks/comments", headers, body)
    end
    line_number = line_number + 1
  end
end

function request()
  sent = sent + 1
  if sent > #requests then
    wrapped = wrapped + 1  -- a repeat: the harness generates more than wrk can send, so this stays 0
  end
  return requests[((sent - 1) % #requests) + 1]
end

function done(summary, latency, _requests)
  local repeats = 0
  for _, thread in ipairs(threads) do
    repeats = repeats + thread:get("wrapped")
  end
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "repeats": %d}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, repeats))
end
