-- An API token may expire (epoch ms; NULL: never): refused from then on, like a revoked one.
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
