"""Training code: runs offline (a CPU or a GPU session), never at inference time. Each module's ``main`` is a
command (``python -m pedvit.training.NAME --help``) whose outputs ship under ``pedvit/**/weights``."""
