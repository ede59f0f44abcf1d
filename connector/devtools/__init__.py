"""Local real components for tests, benchmarks and the demo (never used in production)."""
