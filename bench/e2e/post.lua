-- Posts distinct signed 1 KiB events: each wrk thread walks its own list of
-- signatures, and the body is the template with that event's id. run.sh
-- writes the files; a receiver restarted for each measurement never sees an
-- event twice (unless a run outlasts the list, when it wraps around).
local function read(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local dir = os.getenv("EVENTS_DIR")
local prefix, suffix, sigs, n

function init(args)
  prefix = read(dir .. "/prefix")
  suffix = read(dir .. "/suffix")
  sigs = {}
  for line in io.lines(dir .. "/sigs." .. id) do
    sigs[#sigs + 1] = line
  end
  -- The warm-up starts at the far end of the list, the measurement at its
  -- start, so the two never post the same event.
  n = tonumber(os.getenv("START") or "0") % #sigs
end

function request()
  n = n % #sigs + 1
  local body = prefix .. "t" .. id .. "_" .. n .. suffix
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["x-ltvboost-signature"] = sigs[n],
  }, body)
end
