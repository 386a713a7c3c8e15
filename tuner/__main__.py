"""``python -m tuner`` is the ``servetune`` command."""

from tuner.cli import main

main()
