"""sslkit: the compute library of the stepwise-SSL workflow (see the module map in README.md)."""
