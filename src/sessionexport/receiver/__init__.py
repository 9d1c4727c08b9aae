"""The receiver toolkit: the other side of the wire."""
