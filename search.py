"""Neural architecture search for small CNNs under a parameter budget: `python search.py --trials 50`."""
import sys

from nas.cli import main

if __name__ == "__main__":
    sys.exit(main())
