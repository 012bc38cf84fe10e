"""The OpenMLDB compiler process (see features/compiler.py): JSON lines in, JSON lines out."""

import sys

from features.compiler import serve_requests


def main() -> None:
    def reply(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    serve_requests(sys.stdin, reply)


if __name__ == "__main__":
    main()
