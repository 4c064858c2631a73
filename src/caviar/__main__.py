"""``python -m caviar``: the same command line as the ``caviar`` script."""

from caviar.cli import main

if __name__ == "__main__":
    main()
