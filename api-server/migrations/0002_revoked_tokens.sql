-- Tokens revoked before their expiry (API tokens, and login sessions ended by logout), by their
-- `jti`. Rows past `exp` can go: the token is refused as expired anyway.
CREATE TABLE revoked_token (
    jti TEXT PRIMARY KEY,
    exp BIGINT NOT NULL
);
