"""The HTTP API: thin routes that parse, call the domain, and render."""
