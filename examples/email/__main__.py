"""`python -m examples.email`."""

from examples.email import main

main()
