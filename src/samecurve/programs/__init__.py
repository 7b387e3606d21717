"""Programs: the hidden answers of replace subjects and what distill tools return.
A program is restricted Python source (one pure function over plain ints, floats
and lists), checked by its syntax tree before it runs and run in a subprocess
with a time and memory limit, so a human's or a tool's submission can never
touch the host."""
