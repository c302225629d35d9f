"""Build the unseen networks benchmarks/profile_accuracy.py checks `edgekit profile` against.

    python benchmarks/profile_networks.py [--dev]  # (needs edgekit[convert]; cached in benchmarks/.cache/profile)

keras.applications architectures at small inputs with weights=None (latency does not depend on weight
values), saved as .keras and converted with the `edgekit convert` command itself to fp32 and full-int8
(random .npz calibration): the same path a user takes. None of these is in the probe suite.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache" / "profile"
NETWORKS = {  # name -> (keras.applications class, input size)
    "mobilenet_v2_128": ("MobileNetV2", 128),
    "mobilenet_v3_small_128": ("MobileNetV3Small", 128),
    "efficientnet_b0_96": ("EfficientNetB0", 96),
    "resnet50_64": ("ResNet50", 64),
}
# The development set: networks the cost model may be tuned against (benchmarks/profile_accuracy.py
# --set dev). Never reported as the unseen networks, so tuning on them does not flatter the test set.
DEV_NETWORKS = {
    "mobilenet_v3_large_128": ("MobileNetV3Large", 128),
    "densenet121_64": ("DenseNet121", 64),
    "efficientnet_b1_96": ("EfficientNetB1", 96),
    "resnet50_96": ("ResNet50", 96),
    "nasnet_mobile_96": ("NASNetMobile", 96),
    "mobilenet_v1_160": ("MobileNet", 160),
}
# MediaPipe's own models, shipped in its PyPI wheel (Apache-2.0, Google LLC): real third-party networks
# unlike keras.applications' - fp16 weights dequantized at load, sparse weights (DENSIFY), PRELU, 8-32
# channel layers at 128-256 px. Split in sibling pairs before any of them was timed (session 9): the
# lighter or portrait sibling is development, the other unseen, so each unseen one has a relative the
# cost model may be tuned on, as the keras.applications families do; iris_landmark (no sibling) is
# unseen, its nearest relative face_landmark development. hand_recrop (tests/data) stays unseen.
MEDIAPIPE_WHEEL = "mediapipe==0.10.14"
MEDIAPIPE_DEV = {
    "mp_face_detection_short_range": "face_detection/face_detection_short_range.tflite",
    "mp_face_landmark": "face_landmark/face_landmark.tflite",
    "mp_hand_landmark_lite": "hand_landmark/hand_landmark_lite.tflite",
    "mp_palm_detection_lite": "palm_detection/palm_detection_lite.tflite",
    "mp_pose_detection": "pose_detection/pose_detection.tflite",
    "mp_selfie_segmentation": "selfie_segmentation/selfie_segmentation.tflite",
}
MEDIAPIPE_TEST = {
    "mp_face_detection_full_range_sparse": "face_detection/face_detection_full_range_sparse.tflite",
    "mp_iris_landmark": "iris_landmark/iris_landmark.tflite",
    "mp_hand_landmark_full": "hand_landmark/hand_landmark_full.tflite",
    "mp_palm_detection_full": "palm_detection/palm_detection_full.tflite",
    "mp_pose_landmark_full": "pose_landmark/pose_landmark_full.tflite",
    "mp_selfie_segmentation_landscape": "selfie_segmentation/selfie_segmentation_landscape.tflite",
}


def artifacts(networks: dict | None = None) -> dict[str, Path]:
    """name_precision -> .tflite, building what is missing (the test set unless told)."""
    out = {}
    for name, (cls, size) in (NETWORKS if networks is None else networks).items():
        fp32, int8 = CACHE / f"{name}_fp32.tflite", CACHE / f"{name}_int8.tflite"
        if not (fp32.exists() and int8.exists()):
            _build(name, cls, size)
        out[f"{name}_fp32"], out[f"{name}_int8"] = fp32, int8
    return out


def mediapipe(models: dict[str, str]) -> dict[str, Path]:
    """name -> .tflite of MediaPipe models, taken from the wheel (downloaded from PyPI once, ~40 MB)."""
    import zipfile

    target = CACHE / "mediapipe"
    wanted = {name: target / Path(member).name for name, member in models.items()}
    if all(path.exists() for path in wanted.values()):
        return wanted
    wheels = sorted(target.glob("mediapipe-*.whl"))
    if not wheels:
        print(f"downloading {MEDIAPIPE_WHEEL} from PyPI for its bundled models", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", MEDIAPIPE_WHEEL, "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.11", "--platform", "manylinux_2_17_x86_64", "-d", str(target)],
                       check=True, stdout=subprocess.DEVNULL)
        wheels = sorted(target.glob("mediapipe-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name, member in models.items():
            wanted[name].write_bytes(wheel.read(f"mediapipe/modules/{member}"))
    return wanted


def _build(name: str, cls: str, size: int) -> None:
    import keras

    CACHE.mkdir(parents=True, exist_ok=True)
    keras_path = CACHE / f"{name}.keras"
    model = getattr(keras.applications, cls)(input_shape=(size, size, 3), weights=None)
    model.save(keras_path)
    calib = CACHE / f"{name}_calib.npz"
    rng = np.random.default_rng(0)
    np.savez(calib, **{model.inputs[0].name: rng.uniform(-1, 1, (16, size, size, 3)).astype(np.float32)})
    print(f"converting {name}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "edgekit.cli", "convert", str(keras_path), "--quantize", "fp32,int8",
                    "--calibration", str(calib), "--calibration-samples", "16", "--no-gate", "--no-explain",
                    "-o", str(CACHE / name), "--force"], check=True)
    for precision in ("fp32", "int8"):
        found = sorted((CACHE / name).glob(f"*_{precision}.tflite"))
        (CACHE / f"{name}_{precision}.tflite").write_bytes(found[0].read_bytes())


if __name__ == "__main__":
    for key, path in artifacts(DEV_NETWORKS if "--dev" in sys.argv else NETWORKS).items():
        print(key, path, path.stat().st_size)
