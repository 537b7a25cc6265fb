"""`python -m examples.crm`."""

from examples.crm import main

main()
