#!/usr/bin/env python3
"""Fuzz the connection target (see targets.py).

``python tests/fuzz/fuzz_connection.py -runs=N tests/fuzz/corpus/connection``
"""

from _atheris_main import main

if __name__ == "__main__":
    main("connection")
