"""``python -m rodin_async``: the same command as the ``rodin-async`` script."""

from ._cli import main

if __name__ == "__main__":
    main()
