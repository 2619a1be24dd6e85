-- wrk script for bench/serve.sh: POSTs the JSON body in $BODY to the URL wrk is given.
local f = assert(io.open(os.getenv("BODY"), "r"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
