"""Synthetic data sources: realistic sessions (and later RUM event streams)."""
