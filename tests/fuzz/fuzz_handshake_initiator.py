#!/usr/bin/env python3
"""Fuzz the handshake_initiator target (see targets.py).

``python tests/fuzz/fuzz_handshake_initiator.py -runs=N tests/fuzz/corpus/handshake_initiator``
"""

from _atheris_main import main

if __name__ == "__main__":
    main("handshake_initiator")
