-- wrk script: GET the URL's file with a 1 MiB Range at a random 1 MiB-aligned
-- offset inside its first 200 MiB (the same load as ../shared/bench/range.lua).
local chunk = 1048576
local n = 200
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
end
function request()
  local off = math.random(0, n - 1) * chunk
  return wrk.format("GET", nil, { ["Range"] = "bytes=" .. off .. "-" .. (off + chunk - 1) })
end
