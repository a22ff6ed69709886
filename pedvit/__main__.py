"""`python -m pedvit ...` == the `pedvit` command."""

from pedvit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
