"""Sessions in: completed-session documents (and, later, RUM events) to session-log records."""
