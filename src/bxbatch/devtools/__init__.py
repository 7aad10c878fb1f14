"""Tools for the demo, tests and benchmarks: throwaway PostgreSQL servers and the demo run."""
