"""`python -m fraudflow` = the `fraudflow` command."""

from fraudflow.cli import main

if __name__ == "__main__":  # a spawned writer process imports this module again
    main()
