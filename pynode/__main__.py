"""``python -m pynode``: the same as the ``pynode`` command."""

from pynode.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
