"""Shipping: standard metadata read back with independent code, bundles with checksums (the HTML
report is checked in test_charts.py: it needs edgekit[charts])."""
from __future__ import annotations

import json
import shutil
import struct
import zipfile

import pytest

from conftest import run_cli, tflite_from_function

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def shipped(samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("ship")
    result = run_cli("convert", samples / "digits_cnn.keras", "--to", "tflite,coreml", "-q", "fp32,fp16,int8",
                     "--calibration", samples / "calibration", "--labels", samples / "labels.txt", "--mean", "0",
                     "--std", "255", "--name", "Digits", "--description", "Handwritten digit classifier",
                     "--version", "2.1", "--author", "edgekit tests", "--license", "Apache-2.0", "--no-explain",
                     "-o", out)
    assert result.exit_code == 0, result.stderr
    return out


class Table:
    """A flatbuffer table read with struct alone (independent of the generated code): the vtable
    gives each field's offset by its declaration index in metadata_schema.fbs."""

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vsize = struct.unpack_from("<H", buf, self.vtable)[0]

    @classmethod
    def root(cls, buf: bytes) -> "Table":
        return cls(buf, struct.unpack_from("<I", buf, 0)[0])

    def _field(self, index: int) -> int:
        slot = 4 + 2 * index
        return struct.unpack_from("<H", self.buf, self.vtable + slot)[0] if slot < self.vsize else 0

    def _indirect(self, at: int) -> int:
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def string(self, index: int) -> str | None:
        off = self._field(index)
        if not off:
            return None
        start = self._indirect(self.pos + off)
        length = struct.unpack_from("<I", self.buf, start)[0]
        return self.buf[start + 4:start + 4 + length].decode()

    def scalar(self, index: int, fmt: str, default=0):
        off = self._field(index)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + off)[0] if off else default

    def table(self, index: int) -> "Table | None":
        off = self._field(index)
        return Table(self.buf, self._indirect(self.pos + off)) if off else None

    def _vector(self, index: int) -> tuple[int, int]:
        off = self._field(index)
        if not off:
            return 0, 0
        start = self._indirect(self.pos + off)
        return start + 4, struct.unpack_from("<I", self.buf, start)[0]

    def tables(self, index: int) -> list["Table"]:
        start, n = self._vector(index)
        return [Table(self.buf, self._indirect(start + 4 * i)) for i in range(n)]

    def floats(self, index: int) -> list[float]:
        start, n = self._vector(index)
        return list(struct.unpack_from(f"<{n}f", self.buf, start)) if n else []


def _metadata_buffer(model: bytes, name: str) -> bytes:
    from ai_edge_litert import schema_py_generated as schema  # the TFLite model schema, not the metadata one

    m = schema.Model.GetRootAs(model, 0)
    for i in range(m.MetadataLength()):
        if m.Metadata(i).Name().decode() == name:
            return m.Buffers(m.Metadata(i).Buffer()).DataAsNumpy().tobytes()
    raise AssertionError(f"no {name} metadata")


def test_tflite_metadata_field_by_field(shipped, samples):
    model = (shipped / "digits_cnn_int8.tflite").read_bytes()
    buf = _metadata_buffer(model, "TFLITE_METADATA")
    assert buf[4:8] == b"M001"
    # ModelMetadata: name 0, description 1, version 2, subgraph_metadata 3, author 4, license 5,
    # associated_files 6, min_parser_version 7
    root = Table.root(buf)
    assert (root.string(0), root.string(1), root.string(2)) == ("Digits", "Handwritten digit classifier", "2.1")
    assert (root.string(4), root.string(5), root.string(7)) == ("edgekit tests", "Apache-2.0", "1.0.0")
    (subgraph,) = root.tables(3)
    # SubGraphMetadata: input_tensor_metadata 2, output_tensor_metadata 3
    (inp,) = subgraph.tables(2)
    (out,) = subgraph.tables(3)
    # TensorMetadata: name 0, description 1, content 3, process_units 4, stats 5, associated_files 6
    assert inp.string(0) == "image" and "32x32 grayscale" in inp.string(1)
    content = inp.table(3)  # Content: content_properties_type 0 (union tag), content_properties 1
    assert content.scalar(0, "B") == 2  # ContentProperties.ImageProperties
    image = content.table(1)  # ImageProperties: color_space 0, default_size 1
    assert image.scalar(0, "b") == 2  # ColorSpaceType.GRAYSCALE
    size = image.table(1)  # ImageSize: width 0, height 1
    assert (size.scalar(0, "I"), size.scalar(1, "I")) == (32, 32)
    (unit,) = inp.tables(4)  # ProcessUnit: options_type 0, options 1
    assert unit.scalar(0, "B") == 1  # ProcessUnitOptions.NormalizationOptions
    norm = unit.table(1)  # NormalizationOptions: mean 0, std 1
    assert norm.floats(0) == [0.0] and norm.floats(1) == [255.0]
    stats = inp.table(5)  # Stats: max 0, min 1
    assert stats.floats(0) == [1.0] and stats.floats(1) == [0.0]
    assert out.string(0) == "probs"
    (labels,) = out.tables(6)  # AssociatedFile: name 0, description 1, type 2
    assert labels.string(0) == "labels.txt" and labels.scalar(2, "b") == 2  # TENSOR_AXIS_LABELS
    with zipfile.ZipFile(shipped / "digits_cnn_int8.tflite") as packed:  # the model is also a zip
        assert packed.read("labels.txt").decode() == (samples / "labels.txt").read_text()
        assert all(i.compress_type == zipfile.ZIP_STORED for i in packed.infolist())


def test_packed_labels_do_not_disturb_the_model(shipped):
    import edgekit

    model = edgekit.load(shipped / "digits_cnn_fp32.tflite")
    assert model.manifest.model["author"] == "edgekit tests" and model.labels[9] == "9"


def test_coreml_metadata(shipped):
    from edgekit.coreml.executor import load_spec_and_program

    _, spec, _ = load_spec_and_program(shipped / "digits_cnn_fp16.mlpackage")
    meta = spec.description.metadata
    assert (meta.author, meta.license, meta.versionString) == ("edgekit tests", "Apache-2.0", "2.1")
    assert meta.shortDescription.startswith("Handwritten digit classifier; parity cosine ")
    assert json.loads(meta.userDefined["edgekit.manifest"])["model"]["name"] == "Digits"
    assert spec.description.input[0].type.imageType.width == 32


@pytest.fixture(scope="module")
def bundle_dir(shipped, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "app"
    result = run_cli("bundle", shipped / "digits_cnn_int8.tflite", shipped / "digits_cnn_fp32.tflite",
                     shipped / "digits_cnn_fp16.mlpackage", "-o", out)
    assert result.exit_code == 0, result.stderr
    return out


def test_bundle_layout_and_manifest(bundle_dir):
    import hashlib

    assert (bundle_dir / "android" / "digits_cnn_int8.tflite").is_file()
    assert (bundle_dir / "android" / "labels.txt").read_text().splitlines()[0] == "0"
    assert (bundle_dir / "ios" / "digits_cnn_fp16.mlpackage" / "Manifest.json").is_file()
    with zipfile.ZipFile(bundle_dir / "ios" / "digits_cnn_fp16.mlpackage.zip") as z:
        assert "digits_cnn_fp16.mlpackage/Manifest.json" in z.namelist()
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    for f in manifest["files"]:
        data = (bundle_dir / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size_bytes"]
    paths = {f["path"] for f in manifest["files"]}
    assert {"android/digits_cnn_int8.tflite", "android/labels.txt", "ios/digits_cnn_fp16.mlpackage.zip",
            "README.md"} <= paths
    int8 = next(a for a in manifest["artifacts"] if a["recipe"] == "int8")
    assert int8["preprocessing"]["std"] == [255.0] and int8["parity"]["top1_agreement"] >= 0.95
    assert set(int8["emulated_latency_ms"]) == {"rpi3", "rpi4", "rpi5", "pixel6"}
    readme = (bundle_dir / "README.md").read_text()
    assert "VNCoreMLModel" in readme
    # the Task library only for float/uint8 inputs; the int8-input artifact through the Interpreter API
    task = readme.split("## Android (Kotlin, TFLite Task library")[1].split("\n## ")[0]
    interp = readme.split("## Android (Kotlin, Interpreter API: int8 input)")[1].split("\n## ")[0]
    assert "ImageClassifier.createFromFileAndOptions" in task and "digits_cnn_int8" not in task
    assert "digits_cnn_fp32.tflite" in task or "digits_cnn_fp16.tflite" in task
    assert "ImageClassifier" not in interp.split("```kotlin")[1]
    assert 'Interpreter(FileUtil.loadMappedFile(context, "digits_cnn_int8.tflite"))' in interp
    assert "input.quantizationParams()" in interp and "coerceIn(-128, 127).toByte()" in interp
    assert "Bitmap.createScaledBitmap(bitmap, 32, 32, true)" in interp and "floatArrayOf(255.0f)" in interp
    assert "mean [0.0] and std [255.0]" in readme


def test_bundle_check_detects_tampering(bundle_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle_dir, copy)
    result = run_cli("bundle", "--check", copy)
    assert result.exit_code == 0 and "every artifact loads" in result.stdout
    target = copy / "android" / "digits_cnn_fp32.tflite"
    data = bytearray(target.read_bytes())
    data[-200] ^= 0xFF
    target.write_bytes(bytes(data))
    (copy / "android" / "labels.txt").unlink()
    result = run_cli("bundle", "--check", copy)
    assert result.exit_code == 4
    assert "android/digits_cnn_fp32.tflite: changed (sha256 differs from manifest.json)" in result.stderr
    assert "android/labels.txt: missing" in result.stderr


def test_bundle_bad_inputs(shipped, bundle_dir, tmp_path):
    result = run_cli("bundle", shipped / "digits_cnn_int8.tflite", "-o", bundle_dir)
    assert result.exit_code == 3 and "exists; pass --force" in result.stderr
    result = run_cli("bundle", shipped / "digits_cnn_int8.tflite", shipped / "digits_cnn_int8.tflite",
                     "-o", tmp_path / "dup")
    assert result.exit_code == 2 and "share the name digits_cnn_int8.tflite" in result.stderr
    bare = tmp_path / "bare.tflite"  # a model converted without edgekit: no metadata at all
    import tensorflow as tf

    tflite_from_function(lambda x: x * 2.0, [tf.TensorSpec([1, 4], tf.float32)], bare)
    result = run_cli("bundle", bare, "-o", tmp_path / "b")
    assert result.exit_code == 2
    assert "bare.tflite lacks the edgekit manifest and TFLite Metadata (TFLITE_METADATA)" in result.stderr
    assert "re-convert it with `edgekit convert`" in result.stderr and not (tmp_path / "b").exists()
