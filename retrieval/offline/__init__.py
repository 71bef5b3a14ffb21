"""Offline retrieval tools, never imported by serving: embedder tuning, threshold calibration,
evaluation on labelled queries, metrics, plots (`supportbot tune-retriever`, `calibrate`,
`eval retrieval` and bench/ use them)."""
