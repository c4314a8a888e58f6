"""Byte-level formats: Go-compatible JSON for archive v3, gzip, Arrow/Parquet."""
