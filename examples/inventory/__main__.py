"""`python -m examples.inventory [--stock SKU=N,...]`."""

import sys

from examples.inventory import main

main(sys.argv[1:])
