"""`python -m samecurve` is the `samecurve` command."""

from samecurve.cli import main

main()
