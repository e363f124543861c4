"""Data files: tables with schema checks, per-prompt quality, outcome files, prompt embeddings,
versioned checkpoints, atomic writes, and where the bundled data lives."""
