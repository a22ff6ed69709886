#!/usr/bin/env python
"""Train and evaluate the edge fusion and the workers' window adapter: `python -m pedvit.training.fusion` under
the name the docs and the shipped weights' metadata use (`python scripts/train_fusion.py distil ...`)."""

import sys

from pedvit.training.fusion import main

if __name__ == "__main__":
    sys.exit(main())
