"""Entry point for the web app: `python app.py --index DIR [--port P] [--host H]` (same as `simsearch serve`)."""
import sys

from simsearch.cli.core import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
