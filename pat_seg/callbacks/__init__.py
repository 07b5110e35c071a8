"""Lightning callbacks of pat-seg (one module per job)."""
