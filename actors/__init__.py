"""Generic supervised actor runtime on Trio (no dcorch imports)."""
