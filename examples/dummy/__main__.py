"""`python -m examples.dummy`."""

from examples.dummy import main

main()
