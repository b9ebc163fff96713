"""``python -m bitnet_lab`` runs the command line (`bitnet_lab.cli`)."""

import sys

from bitnet_lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
