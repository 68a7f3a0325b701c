-- wrk script for bench/run.py: send pre-built pushes (one per line of the
-- file given after `--`: path with query, a tab, the body), each once,
-- count answers that are not a 200 `success` (or empty, with `empty` after
-- the file), and print the latency distribution as one JSON line.
--
--   wrk -t1 -c64 -d10s -s bench/pushes.lua http://127.0.0.1:PORT -- pushes.tsv [empty]

-- Globals, not locals: done() reads `count` and `wrong` of each thread
-- with thread:get, which sees only globals.
requests = {}
count = 0
next_index = 0
wrong = 0
local threads = {}
-- The right answer: `success`, or an empty body (`empty`, after the file).
local expected = "success"

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  if args[2] == "empty" then
    expected = ""
  end
  for line in io.lines(args[1]) do
    local tab = line:find("\t", 1, true)
    if tab then
      count = count + 1
      requests[count] = wrk.format("POST", line:sub(1, tab - 1),
        { ["Content-Type"] = "text/xml" }, line:sub(tab + 1))
    end
  end
end

function request()
  next_index = next_index + 1
  if next_index > count then
    -- Past the end the pushes repeat (duplicates, answered faster): the
    -- file must hold more pushes than a run sends (bench/run.py checks).
    next_index = 1
  end
  return requests[next_index]
end

function response(status, headers, body)
  if status ~= 200 or body ~= expected then
    wrong = wrong + 1
  end
end

function done(summary, latency, _)
  -- Each thread counted in its own Lua state.
  local wrong_total, in_file = 0, 0
  for _, thread in ipairs(threads) do
    wrong_total = wrong_total + (thread:get("wrong") or 0)
    in_file = thread:get("count") or 0
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"wrong":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"max_us":%d,"pushes_in_file":%d}\n',
    summary.requests, summary.duration, wrong_total, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, in_file))
end
