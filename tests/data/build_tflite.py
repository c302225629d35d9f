"""Rebuild the small third-party .tflite files the TensorFlow-free tiers use (needs edgekit[convert]).

    python tests/data/build_tflite.py

They are converted by TensorFlow directly, not by edgekit: no manifest, no metadata, as models
from elsewhere arrive. Committed because the device and serve tiers run without TensorFlow.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # for conftest.tflite_from_function


def main() -> None:
    import tensorflow as tf

    from conftest import tflite_from_function

    # GATHER checks its indices at run time, so an out-of-range index makes inference itself fail:
    # the server must answer 500 for that request and keep serving.
    tflite_from_function(lambda idx: tf.gather(tf.range(10, dtype=tf.float32) * 2.0, idx),
                         [tf.TensorSpec([1], tf.int32, name="image")], HERE / "lookup.tflite")


if __name__ == "__main__":
    main()
