"""`python -m examples.inventory`."""

from examples.inventory import main

main()
