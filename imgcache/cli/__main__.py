"""``python -m imgcache.cli``: the ``imgcache`` console script."""

from . import main

if __name__ == "__main__":
    main()
