"""Print the speed of the distributed-DP encoder (encode and decode, Skellam noise) against a
plain-numpy version of the same pipeline, measured in the same run.

    python benchmarks/privacy_encode.py [--dim 1048576] [--bits 16] [--json]
"""

from __future__ import annotations

import sys

from privacy.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
