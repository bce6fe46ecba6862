#!/usr/bin/env python3
"""Fuzz the control target (see targets.py).

``python tests/fuzz/fuzz_control.py -runs=N tests/fuzz/corpus/control``
"""

from _atheris_main import main

if __name__ == "__main__":
    main("control")
