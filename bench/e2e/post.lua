-- Posts one signed 1 KiB event; run.sh writes the body and header files.
local function read(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

wrk.method = "POST"
wrk.body = read(os.getenv("BODY_FILE"))
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-ltvboost-signature"] = read(os.getenv("SIG_FILE"))
