-- A login for an address without an account does the same work as one for an account
-- (issue: identity and tenancy hardening, "small leaks"): a failed login on an account is
-- an event (a committed write); a failed login on an unknown address is counted here (a
-- committed write too), so neither the answer nor its timing tells whether the account
-- exists. It also shows operators credential stuffing aimed at addresses nobody uses.
--
-- The address is kept as its blind index (an HMAC under the server key), never in clear.
-- Rows of addresses not tried for 30 days are pruned as new failures arrive (a few at a
-- time, through the index on last_at), so a storm of random addresses cannot grow it for
-- ever.
CREATE TABLE login_failures_unknown
(
    address_index text PRIMARY KEY,
    failures      bigint      NOT NULL,
    first_at      timestamptz NOT NULL DEFAULT now(),
    last_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_unknown_last_at ON login_failures_unknown (last_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON login_failures_unknown TO eriop_app;
