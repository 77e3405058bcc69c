# -*- test-case-name: tests.test_reindex -*-
"""C{python -m twistreg <command>}: administration commands beside C{twist twistreg}."""

from __future__ import annotations

import argparse

from twistreg import check, purge, reindex, showconfig
from twistreg.bridge import command as bridge
from twistreg.gc import command as gc


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the command it names."""
    parser = argparse.ArgumentParser(prog="python -m twistreg")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)
    reindex.add_command(commands)
    purge.add_command(commands)
    bridge.add_command(commands)
    gc.add_command(commands)
    check.add_command(commands)
    showconfig.add_command(commands)
    options = parser.parse_args(argv)
    options.run(options)


if __name__ == "__main__":
    main()
