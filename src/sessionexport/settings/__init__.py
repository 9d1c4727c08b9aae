"""Settings 2.0 compatible configuration: schemas, object semantics, secrets, management zones."""
