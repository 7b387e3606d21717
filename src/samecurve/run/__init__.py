"""Running suites: cells, results and their statistics."""
