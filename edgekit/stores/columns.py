"""The one row schema every store writes, whichever engine produced the rows."""
COLUMNS = ["input", "model_sha256", "model", "label", "score", "top_k", "outputs", "latency_ms", "created_utc"]
