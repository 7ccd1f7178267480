-- Dovecot 2.4 passdb (driver = lua) for PLAIN and LOGIN: the password is an
-- authentik app password. This script only passes the login to the checker on
-- the container's loopback (/usr/local/bin/app-password-check, which asks
-- authentik, caches and throttles) and maps its answer:
--
--   200 ok ...            PASSDB_RESULT_OK
--   403 fail <why>        PASSDB_RESULT_PASSWORD_MISMATCH
--   403 disabled <why>    PASSDB_RESULT_USER_DISABLED
--   anything else, or no answer   PASSDB_RESULT_INTERNAL_FAILURE
--
-- A connection that is not secured never reaches the checker: `secured` is
-- "TLS" for IMAP over TLS and "secured" when Postfix says its session has
-- TLS (or a local/trusted connection); anything else is refused here as
-- well as by the checker.
--
-- Settings (dovecot.conf, checked with Dovecot 2.4.1), after the deny passdbs
-- and before the directory's passwd-file and its catch-all deny passdb:
--   passdb app_password {
--     driver = lua
--     mechanisms_filter = plain login
--     lua_file = /usr/local/lib/roundcube-authentik/app-password.lua
--     lua_settings {
--       checker_url = http://127.0.0.1:8078/check
--     }
--     use_worker = yes
--     result_failure = return-fail
--     result_internalfail = return-fail
--   }
-- The HTTP request blocks the process (dovecot.http's submit() runs
-- http_client_wait() until the answer), so the passdb runs in auth worker
-- processes (use_worker = yes, also the Lua driver's default). Without the
-- two result_ settings a refusal or a checker tempfail would go on to the
-- passdbs below and end as "user disabled" from the catch-all deny passdb.
-- There is no auth_passdb_get_cache_key(): Dovecot's auth cache stays out of
-- it; the checker caches successes itself.

local checker_url = nil
local http_client = nil

local function urlencode(value)
  return (string.gsub(value or "", "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

function script_init(args)
  checker_url = args and args.checker_url
  if checker_url == nil or checker_url == "" then
    error("app-password.lua: lua_settings { checker_url = ... } is missing")
  end
  return 0
end

-- Created on first use, in the process that uses it (an auth worker).
local function client()
  if http_client == nil then
    http_client = dovecot.http.client({
      connect_timeout = "2s",
      -- Longer than the checker's own timeout towards authentik, so that the
      -- checker's tempfail answer arrives before Dovecot gives up.
      request_timeout = "30s",
      request_absolute_timeout = "30s",
      request_max_attempts = "1",
      user_agent = "dovecot-app-password",
    })
  end
  return http_client
end

function auth_password_verify(req, password)
  local secured = req.secured
  if secured ~= "TLS" and secured ~= "secured" then
    return dovecot.auth.PASSDB_RESULT_USER_DISABLED, "app passwords only over TLS"
  end

  local form = table.concat({
    "user=" .. urlencode(req.user),
    "password=" .. urlencode(password),
    "remote_ip=" .. urlencode(req.remote_ip),
    "secured=" .. urlencode(secured),
    "protocol=" .. urlencode(req.protocol),
    "mechanism=" .. urlencode(req.mechanism),
  }, "&")

  local request = client():request({ url = checker_url, method = "POST" })
  request:add_header("Content-Type", "application/x-www-form-urlencoded")
  request:set_payload(form)
  local response = request:submit()

  local status = response:status()
  local payload = response:payload() or ""
  local verdict, reason = string.match(payload, "^(%a+)%s*(.-)%s*$")
  if status == 200 and verdict == "ok" then
    return dovecot.auth.PASSDB_RESULT_OK, {}
  elseif status == 403 and verdict == "fail" then
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, reason
  elseif status == 403 and verdict == "disabled" then
    return dovecot.auth.PASSDB_RESULT_USER_DISABLED, reason
  end
  -- Status 9000 and above are the HTTP client's own errors (connection
  -- refused, timeout): response:reason() says which.
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE,
    string.format("app password checker: %d %s", status,
                  (status >= 9000 and response:reason()) or string.sub(payload, 1, 200))
end
