"""Sessions out: batching, formats, auth, delivery (the exporter's rules and loop)."""
