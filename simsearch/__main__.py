"""`python -m simsearch` is the CLI."""
import sys

from simsearch.cli.core import main

sys.exit(main())
