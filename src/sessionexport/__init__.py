"""sessionexport: completed user sessions in, durable session log, bulk exports out."""

__version__ = "0.1.0"
