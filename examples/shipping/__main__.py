"""`python -m examples.shipping`."""

from examples.shipping import main

main()
