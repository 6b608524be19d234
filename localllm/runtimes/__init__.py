"""Runtime adapters; each imports its backend only when chosen."""
