#!/usr/bin/env python3
"""Fuzz the framing target (see targets.py).

``python tests/fuzz/fuzz_framing.py -runs=N tests/fuzz/corpus/framing``
"""

from _atheris_main import main

if __name__ == "__main__":
    main("framing")
