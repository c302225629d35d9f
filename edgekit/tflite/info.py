"""What a .tflite holds, read without running it: `edgekit inspect` and `edgekit.artifact.inspect`."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .._deps import import_failure
from ..errors import ArtifactError
from ..manifest import TensorInfo
from .metadata import read_manifest
from .reader import enum_names, root, schema

# Custom ops the stock LiteRT runtime runs without the app registering anything. Checked on
# ai-edge-litert 2.3: the MediaPipe ops are claimed by the XNNPACK delegate (on by default), which
# is why a model using Convolution2DTransposeBias runs although it is a "custom" op; the others
# are registered by LiteRT's builtin op resolver.
RUNTIME_CUSTOM_OPS = {
    "Convolution2DTransposeBias": "XNNPACK delegate", "MaxPoolingWithArgmax2D": "XNNPACK delegate",
    "MaxUnpooling2D": "XNNPACK delegate", "TFLite_Detection_PostProcess": "LiteRT builtin resolver",
    "Mfcc": "LiteRT builtin resolver", "AudioSpectrogram": "LiteRT builtin resolver",
}


@dataclass
class TfliteInfo:
    kind = "tflite"
    size_bytes: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    op_counts: Counter
    custom_ops: list[str]
    flex_ops: list[str]
    signatures: list[str]
    metadata_names: list[str]
    subgraphs: int
    manifest: dict[str, Any] | None = None
    schema_version: int = 0
    description: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def unresolved_custom_ops(self) -> list[str]:
        """Custom ops the device app must register a kernel for."""
        return [c for c in self.custom_ops if c not in RUNTIME_CUSTOM_OPS]


def _tensor_info(subgraph, index: int, dtype_names: dict[int, str]) -> TensorInfo:
    t = subgraph.Tensors(index)
    shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
    if t.ShapeSignatureLength():
        shape = [None if int(d) < 0 else int(d) for d in t.ShapeSignatureAsNumpy()]
    dtype = dtype_names.get(t.Type(), f"type{t.Type()}").lower()
    scale = zero_point = None
    q = t.Quantization()
    if q is not None and q.ScaleLength() == 1:
        scale, zero_point = float(q.Scale(0)), int(q.ZeroPoint(0)) if q.ZeroPointLength() else 0
    return TensorInfo((t.Name() or b"").decode(), tuple(shape), dtype, scale, zero_point)


def inspect_bytes(data: bytes, origin: str = "model") -> TfliteInfo:
    generated = schema()
    model = root(data, origin)
    try:
        op_names = enum_names(generated.BuiltinOperator)
        dtype_names = enum_names(generated.TensorType)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            if code == generated.BuiltinOperator.CUSTOM:
                codes.append("CUSTOM:" + (oc.CustomCode() or b"?").decode())
            else:
                codes.append(op_names.get(code, f"BUILTIN_{code}"))
        counts: Counter = Counter()
        for s in range(model.SubgraphsLength()):
            sg = model.Subgraphs(s)
            for o in range(sg.OperatorsLength()):
                counts[codes[sg.Operators(o).OpcodeIndex()]] += 1
        sg0 = model.Subgraphs(0)
        inputs = [_tensor_info(sg0, int(i), dtype_names) for i in sg0.InputsAsNumpy()] if sg0.InputsLength() else []
        outputs = [_tensor_info(sg0, int(i), dtype_names) for i in sg0.OutputsAsNumpy()] if sg0.OutputsLength() else []
        signatures = [(model.SignatureDefs(i).SignatureKey() or b"").decode() for i in range(model.SignatureDefsLength())]
        metadata_names = [(model.Metadata(i).Name() or b"").decode() for i in range(model.MetadataLength())]
        custom = sorted({c.split(":", 1)[1] for c in codes if c.startswith("CUSTOM:")})
        info = TfliteInfo(
            size_bytes=len(data), inputs=inputs, outputs=outputs, op_counts=counts,
            custom_ops=[c for c in custom if not c.startswith("Flex")],
            flex_ops=[c for c in custom if c.startswith("Flex")],
            signatures=signatures, metadata_names=metadata_names, subgraphs=model.SubgraphsLength(),
            schema_version=model.Version(), description=(model.Description() or b"").decode(errors="replace"),
        )
    except ArtifactError:
        raise
    except ImportError as e:  # a broken install, not a corrupt model
        raise import_failure(e) from e
    except Exception as e:  # a structurally broken flatbuffer
        raise ArtifactError(f"{origin} is not a readable .tflite flatbuffer ({type(e).__name__}: {e}); "
                            "the file may be truncated or corrupt") from e
    info.manifest = read_manifest(data, origin)
    return info
