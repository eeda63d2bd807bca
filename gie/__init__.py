"""gie: graph-guided interest expansion (MMBee GIE), offline batch side.

Importing this package is cheap: heavy dependencies (torch, dgl, faiss, pyspark) are imported
only by the stage modules that need them.
"""
__version__ = "0.1.0"

import os as _os

_os.environ.setdefault("DGLBACKEND", "pytorch")  # DGL otherwise warns and guesses
