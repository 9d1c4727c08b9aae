"""The session model and the rules about sessions (validation, identity, scores). No I/O."""
