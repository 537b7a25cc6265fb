"""`python -m examples.payments [flags]`."""

import sys

from examples.payments import main

main(sys.argv[1:])
