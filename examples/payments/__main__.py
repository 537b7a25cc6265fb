"""`python -m examples.payments`."""

from examples.payments import main

main()
