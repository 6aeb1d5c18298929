"""`python -m mclu`: the same as the `mclu` command."""

from mclu.cli import main

if __name__ == "__main__":
    main.main()
