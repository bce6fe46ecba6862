#!/usr/bin/env python3
"""Fuzz the decode target (see targets.py).

``python tests/fuzz/fuzz_decode.py -runs=N tests/fuzz/corpus/decode``
"""

from _atheris_main import main

if __name__ == "__main__":
    main("decode")
