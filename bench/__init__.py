"""Scale benchmarks."""
