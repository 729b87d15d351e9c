"""``python -m transcriber`` is the ``transcriber`` command."""

from transcriber.cli import main

main()
