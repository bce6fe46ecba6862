#!/usr/bin/env python3
"""Fuzz the handshake_acceptor target (see targets.py).

``python tests/fuzz/fuzz_handshake_acceptor.py -runs=N tests/fuzz/corpus/handshake_acceptor``
"""

from _atheris_main import main

if __name__ == "__main__":
    main("handshake_acceptor")
