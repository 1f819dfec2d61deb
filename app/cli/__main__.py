"""``python -m app.cli``: the same as the console script ``engram``."""

from app.cli import main

main()
