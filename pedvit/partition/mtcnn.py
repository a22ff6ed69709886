"""A small, torchvision-free MTCNN face detector (Zhang et al. 2016) on the weights that the PyPI package
``facenet-pytorch`` ships (``facenet_pytorch/data/{pnet,rnet,onet}.pt``).

Only the weight files are read: the package itself is never imported (its code imports torchvision, which
does not load beside the CPU torch used here). The three networks and the cascade below are written for
pedvit: an image pyramid through the proposal net (P-Net), then refinement (R-Net, 24 px crops) and output
(O-Net, 48 px crops), each stage with its own score threshold, box regression and non-maximum suppression.

Thresholds default to lower values than the usual (0.6, 0.7, 0.7): on the edge a false positive costs
compute, a miss costs privacy.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import warnings
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MTCNN", "weights_dir", "nms"]


def _prelu(x: torch.Tensor, m: nn.PReLU) -> torch.Tensor:
    """PReLU with the per-channel slopes of ``m`` (axis 1)."""
    return F.prelu(x, m.weight)


def _face_prob(logits: torch.Tensor) -> torch.Tensor:
    """Softmax probability of class 1 of two logits on axis 1 (= sigmoid of their difference)."""
    return torch.sigmoid(logits[:, 1] - logits[:, 0])


def weights_dir() -> str:
    """The folder holding ``pnet.pt``, ``rnet.pt``, ``onet.pt`` (from the installed ``facenet-pytorch``).

    Raises:
        RuntimeError: the package or a weight file is missing.
    """
    spec = importlib.util.find_spec("facenet_pytorch")  # does not run the package's __init__
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the MTCNN weights need the PyPI package facenet-pytorch "
                           "(pip install --no-deps facenet-pytorch==2.6.0; ./scripts/setup.sh does it)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data")
    for n in ("pnet", "rnet", "onet"):
        if not os.path.isfile(os.path.join(path, n + ".pt")):
            raise RuntimeError(f"MTCNN weight file {n}.pt is missing in {path}; reinstall facenet-pytorch")
    return path


class _PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B x 3 x H x W -> (B x 4 x h x w box offsets, B x h x w face probability)."""
        x = F.max_pool2d(_prelu(self.conv1(x), self.prelu1), 2, 2, ceil_mode=True)
        x = _prelu(self.conv3(_prelu(self.conv2(x), self.prelu2)), self.prelu3)
        return self.conv4_2(x), _face_prob(self.conv4_1(x))


class _RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B x 3 x 24 x 24 -> (B x 4 offsets, B probabilities)."""
        x = F.max_pool2d(_prelu(self.conv1(x), self.prelu1), 3, 2, ceil_mode=True)
        x = F.max_pool2d(_prelu(self.conv2(x), self.prelu2), 3, 2, ceil_mode=True)
        x = _prelu(self.conv3(x), self.prelu3).permute(0, 3, 2, 1).reshape(x.shape[0], -1)  # weights are Caffe order
        x = _prelu(self.dense4(x), self.prelu4)
        return self.dense5_2(x), _face_prob(self.dense5_1(x))


class _ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B x 3 x 48 x 48 -> (B x 4 offsets, B probabilities); landmarks are not used."""
        x = F.max_pool2d(_prelu(self.conv1(x), self.prelu1), 3, 2, ceil_mode=True)
        x = F.max_pool2d(_prelu(self.conv2(x), self.prelu2), 3, 2, ceil_mode=True)
        x = F.max_pool2d(_prelu(self.conv3(x), self.prelu3), 2, 2, ceil_mode=True)
        x = _prelu(self.conv4(x), self.prelu4).permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = _prelu(self.dense5(x), self.prelu5)
        return self.dense6_2(x), _face_prob(self.dense6_1(x))


@lru_cache(maxsize=1)
def _nets() -> tuple[_PNet, _RNet, _ONet]:
    path = weights_dir()
    nets = (_PNet(), _RNet(), _ONet())
    for net, n in zip(nets, ("pnet", "rnet", "onet")):
        net.load_state_dict(torch.load(os.path.join(path, n + ".pt"), map_location="cpu", weights_only=True))
        net.eval().requires_grad_(False)
    return nets


def _onnx_session(net: nn.Module, example: torch.Tensor, dynamic: dict[str, dict[int, str]]) -> Any:
    """``net`` exported to ONNX in memory and loaded in onnxruntime (CPU, 1 thread): about 10x faster than
    eager torch for these small-channel networks. None when the ``onnx`` package is missing."""
    try:
        import onnx  # noqa: F401 - the exporter needs it
        import onnxruntime as ort
    except ImportError:
        return None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), buf, dynamo=False, input_names=["x"], output_names=["off", "prob"],
                          dynamic_axes=dynamic, opset_version=17)
    opts = ort.SessionOptions()
    # one thread: the edge runs the face and text detectors concurrently (pedvit.partition.detectors)
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.log_severity_level = 3
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


@lru_cache(maxsize=1)
def _runners() -> tuple[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], ...]:
    """P-, R-, O-Net as ``N x 3 x H x W float32 -> (offsets, probabilities)`` numpy callables."""
    nets = _nets()
    examples = (torch.zeros(1, 3, 64, 64), torch.zeros(2, 3, 24, 24), torch.zeros(2, 3, 48, 48))
    dyn = ({"x": {2: "h", 3: "w"}, "off": {2: "h", 3: "w"}, "prob": {1: "h", 2: "w"}},
           {"x": {0: "n"}, "off": {0: "n"}, "prob": {0: "n"}}, {"x": {0: "n"}, "off": {0: "n"}, "prob": {0: "n"}})
    out = []
    for net, ex, d in zip(nets, examples, dyn):
        sess = _onnx_session(net, ex, d)
        if sess is None:
            def run(x: np.ndarray, net: nn.Module = net) -> tuple[np.ndarray, np.ndarray]:
                with torch.inference_mode():
                    off, prob = net(torch.from_numpy(x))
                return off.numpy(), prob.numpy()
        else:
            def run(x: np.ndarray, sess: Any = sess) -> tuple[np.ndarray, np.ndarray]:
                off, prob = sess.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})
                return off, prob
        out.append(run)
    return tuple(out)


def nms(boxes: np.ndarray, scores: np.ndarray, thr: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; ``boxes`` N x 4 ``(x0, y0, x1, y1)``; returns kept indices.

    ``mode="min"`` divides the overlap by the smaller area (drops boxes nested in a stronger one).
    """
    order = np.argsort(-scores)
    area = np.maximum(0, boxes[:, 2] - boxes[:, 0]) * np.maximum(0, boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        iw = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]))
        ih = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]))
        inter = iw * ih
        den = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(den, 1e-9) <= thr]
    return np.asarray(keep, dtype=np.int64)


def _square(b: np.ndarray) -> np.ndarray:
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


def _regress(b: np.ndarray, off: np.ndarray) -> np.ndarray:
    wh = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]] * 2, 1)
    return b + off * wh


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Resized crops (zero outside the image) of ``image`` (H x W x 3 uint8) -> N x 3 x size x size, normalised."""
    import cv2

    h, w = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(np.round(boxes).astype(int)):
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        crop = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if sx1 > sx0 and sy1 > sy0:
            crop[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return _normalise(out)


def _normalise(images: np.ndarray) -> np.ndarray:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32 in about [-1, 1]."""
    return (images.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 128.0


class MTCNN:
    """Face boxes in an RGB uint8 image.

    Args:
        min_face: smallest face side searched, in pixels of the image given to :meth:`detect`.
        thresholds: P-Net, R-Net, O-Net score thresholds (a box must pass all three).
        factor: image pyramid scale step.
    """

    def __init__(self, min_face: int = 16, thresholds: tuple[float, float, float] = (0.5, 0.6, 0.6),
                 factor: float = 0.709) -> None:
        self.min_face, self.thresholds, self.factor = min_face, thresholds, factor
        self.pnet, self.rnet, self.onet = _runners()

    def _proposals(self, image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        fimg = (image.astype(np.float32) - 127.5) / 128.0
        m = 12.0 / self.min_face
        scale, out = m, []
        while min(h, w) * scale >= 12:
            sh, sw = math.ceil(h * scale), math.ceil(w * scale)
            level = cv2.resize(fimg, (sw, sh), interpolation=cv2.INTER_AREA)
            off, prob = self.pnet(level.transpose(2, 0, 1)[None])
            p, o = prob[0], off[0]
            ys, xs = np.nonzero(p >= self.thresholds[0])
            if ys.size:
                b = np.stack([xs * 2 + 1, ys * 2 + 1, xs * 2 + 12, ys * 2 + 12], 1).astype(np.float64) / scale
                b = np.concatenate([b, o[:, ys, xs].T, p[ys, xs][:, None]], 1)
                out.append(b[nms(b[:, :4], b[:, 8], 0.5)])
            scale *= self.factor
        if not out:
            return np.zeros((0, 5))
        b = np.concatenate(out)
        b = b[nms(b[:, :4], b[:, 8], 0.7)]
        return np.concatenate([_square(_regress(b[:, :4], b[:, 4:8])), b[:, 8:9]], 1)

    def _refine(self, img: np.ndarray, b: np.ndarray, net: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                size: int, thr: float, mode: str) -> np.ndarray:
        if not len(b):
            return b
        o, p = net(_crops(img, b[:, :4], size))
        ok = p >= thr
        b = np.concatenate([_regress(b[ok, :4], o[ok]), p[ok, None]], 1)
        return b[nms(b[:, :4], b[:, 4], 0.7, mode)]

    def detect(self, image: np.ndarray) -> np.ndarray:
        """``H x W x 3`` uint8 RGB -> N x 5 ``(x0, y0, x1, y1, score)`` float boxes in image pixels."""
        img = np.ascontiguousarray(image)
        b = self._proposals(img)
        b = self._refine(img, b, self.rnet, 24, self.thresholds[1], "union")
        b = _square(b[:, :4]) if len(b) else b
        if len(b):
            b = np.concatenate([b, np.ones((len(b), 1))], 1)
        b = self._refine(img, b, self.onet, 48, self.thresholds[2], "min")
        return b.reshape(-1, 5)
