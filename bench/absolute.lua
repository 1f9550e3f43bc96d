-- wrk script: send absolute-form requests, as a client configured with a
-- forward proxy does:  GET http://ORIGIN/PATH HTTP/1.1  with Host: ORIGIN.
--
-- Point wrk at the proxy and pass the origin URL after "--":
--   wrk -t1 -c50 -d10s --latency -s bench/absolute.lua \
--       http://127.0.0.1:PROXYPORT/ -- http://127.0.0.1:ORIGINPORT/100b
--
-- No response() callback on purpose: defining one makes wrk hand every
-- response to Lua, which slows the client down.  wrk still counts
-- non-2xx/3xx responses and socket errors itself.

local req = nil

function init(args)
   local target = args[1] or os.getenv("ORIGIN_URL")
   if target == nil then
      error("absolute.lua: pass the origin URL after --, e.g. -- http://127.0.0.1:8080/100b")
   end
   local authority = target:match("^%a[%w+.-]*://([^/?#]+)")
   if authority == nil then
      error("absolute.lua: not an absolute URL: " .. target)
   end
   if not target:match("^%a[%w+.-]*://[^/?#]+[/?]") then
      target = target .. "/"
   end
   local headers = {}
   headers["Host"] = authority
   req = wrk.format("GET", target, headers, nil)
end

function request()
   return req
end
