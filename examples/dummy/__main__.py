"""`python -m examples.dummy [flags]`."""

import sys

from examples.dummy import main

main(sys.argv[1:])
