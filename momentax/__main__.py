"""``python -m momentax``: the same as the ``momentax`` command."""

from momentax.tasks.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
