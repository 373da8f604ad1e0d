-- regfd seen from Sendmail: the milter protocol with Sendmail's macro names.
-- Run by tests/test_sendmail_miltertest.py:  miltertest -s verdicts.lua
-- Environment: REGFD_SOCKET (inet:PORT@127.0.0.1 or unix:PATH), REGFD_TAG (unique per run).
-- Each case is a new connection, like one Sendmail SMTP session; any failed
-- expectation ends the script with an error (non-zero exit).

local sock = os.getenv("REGFD_SOCKET")
local tag = os.getenv("REGFD_TAG") or "t"
local seq = 0

local function check(cond, what)
   if not cond then error("FAILED: " .. what) end
end

-- A final answer ends the message early (regfd accepts inbound mail at MAIL and mail
-- without a Specified Person at DATA). Stages negotiated away or no-reply (regfd on a
-- unix socket skips connect/helo and does not answer headers) leave the last reply as is.
local function final(conn)
   local r = mt.getreply(conn)
   return r == SMFIR_ACCEPT or r == SMFIR_REJECT or r == SMFIR_TEMPFAIL or r == SMFIR_DISCARD
      or r == SMFIR_REPLYCODE
end

-- One message: returns the connection after EOM (or after the early answer) and the last reply.
local function message(from, rcpt, auth, subject, body)
   seq = seq + 1
   local qid = "s" .. tag .. seq
   local conn = mt.connect(sock, 20, 0.25)
   check(conn ~= nil, "connect to " .. sock)
   check(mt.negotiate(conn, nil, nil, nil) == nil, "negotiate")
   mt.macro(conn, SMFIC_CONNECT, "j", "mx.allient.com", "_", "client.allient.com [192.0.2.10]",
            "{daemon_name}", "MTA")
   -- Like Sendmail, do not send the stages the filter negotiated away (regfd on a unix
   -- socket skips connect and helo; the client address then comes from {client_addr}).
   if not mt.test_option(conn, SMFIP_NOCONNECT) then
      check(mt.conninfo(conn, "client.allient.com", "192.0.2.10") == nil, "conninfo")
      if final(conn) then return conn, mt.getreply(conn), qid end
   end
   if not mt.test_option(conn, SMFIP_NOHELO) then
      check(mt.helo(conn, "client.allient.com") == nil, "helo")
   end
   if auth ~= nil then
      mt.macro(conn, SMFIC_MAIL, "i", qid, "{mail_addr}", from, "{auth_authen}", auth, "{auth_type}", "PLAIN",
               "{client_addr}", "192.0.2.10")
   else
      mt.macro(conn, SMFIC_MAIL, "i", qid, "{mail_addr}", from, "{client_addr}", "192.0.2.10")
   end
   check(mt.mailfrom(conn, "<" .. from .. ">") == nil, "mail from")
   if final(conn) then return conn, mt.getreply(conn), qid end
   mt.macro(conn, SMFIC_RCPT, "{rcpt_addr}", rcpt, "{rcpt_mailer}", "esmtp")
   check(mt.rcptto(conn, "<" .. rcpt .. ">") == nil, "rcpt to")
   if final(conn) then return conn, mt.getreply(conn), qid end
   check(mt.data(conn) == nil, "data")
   if final(conn) then return conn, mt.getreply(conn), qid end
   check(mt.header(conn, "From", from) == nil, "header From")
   check(mt.header(conn, "To", rcpt) == nil, "header To")
   check(mt.header(conn, "Subject", subject) == nil, "header Subject")
   check(mt.eoh(conn) == nil, "eoh")
   if final(conn) then return conn, mt.getreply(conn), qid end
   check(mt.bodystring(conn, body .. "\r\n") == nil, "body")
   check(mt.eom(conn) == nil, "eom")
   return conn, mt.getreply(conn), qid
end

local MATERIAL = "Between us, we will miss the quarter and the guidance will be lowered next week."
local EMBARGO = "Attached is the draft press release, embargoed until Thursday 8:00."

-- accept: an internal sender writing to nobody in the registry, decided at DATA (no body read)
local conn, reply = message("bob." .. tag .. "@allient.com", "friend@example.org", nil, "Lunch", "Lunch on Friday?")
check(reply == SMFIR_ACCEPT, "no Specified Person: accept")
mt.disconnect(conn)
mt.echo("accept ok")

-- accept: inbound (an outside sender, not authenticated), decided at MAIL FROM
conn, reply = message("analyst@bank.com", "ir@allient.com", nil, "Q", EMBARGO)
check(reply == SMFIR_ACCEPT, "inbound: accept")
mt.disconnect(conn)
mt.echo("inbound ok")

-- tag: an authorized officer (authenticated with {auth_authen}) sending material content to an analyst
conn, reply = message("ceo@allient.com", "analyst." .. tag .. "@bank.com", "ceo", "Update", MATERIAL)
check(reply == SMFIR_ACCEPT, "officer + material: accept with headers")
check(mt.eom_check(conn, MT_HDRADD, "X-RegFD-Action", "tag"), "X-RegFD-Action: tag added")
local reasons = mt.getheader(conn, "X-RegFD-Reasons", 0)
check(reasons ~= nil and string.find(reasons, "material", 1, true) ~= nil, "X-RegFD-Reasons names the finding kind")
check(string.find(string.lower(reasons), "miss the quarter", 1, true) == nil, "no matched text in X-RegFD-Reasons")
check(not mt.eom_check(conn, MT_QUARANTINE), "tag does not quarantine")
mt.disconnect(conn)
mt.echo("tag ok: " .. reasons)

-- hold: an employee sending material content to an analyst -> Sendmail quarantine
conn, reply = message("dave." .. tag .. "@allient.com", "analyst2." .. tag .. "@bank.com", "dave", "Numbers", MATERIAL)
check(mt.eom_check(conn, MT_QUARANTINE), "employee + material: quarantine")
check(reply == SMFIR_ACCEPT or reply == SMFIR_CONTINUE, "quarantined message is accepted into the queue")
mt.disconnect(conn)
mt.echo("hold ok")

-- reject: an employee sending an embargoed draft -> 550 5.7.1
conn, reply = message("erin." .. tag .. "@allient.com", "pm." .. tag .. "@bank.com", nil, "Draft", EMBARGO)
check(reply == SMFIR_REPLYCODE, "embargo from employee: reply code")
mt.disconnect(conn)
mt.echo("reject ok")
