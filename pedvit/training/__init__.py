"""Training code: runs offline (a CPU or a GPU session), never at inference time. Three commands write what ships
under ``pedvit/**/weights``: ``python -m pedvit.training.fusion`` (the edge fusion and the workers' window
adapter; also ``scripts/train_fusion.py``), ``python -m pedvit.training.inpainter`` and
``python -m pedvit.training.jigsaw_prior`` (the privacy attackers)."""
