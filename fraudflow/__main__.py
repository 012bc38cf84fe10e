"""`python -m fraudflow` = the `fraudflow` command."""

from fraudflow.cli import main

main()
