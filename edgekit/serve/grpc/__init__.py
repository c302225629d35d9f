"""The Open Inference Protocol's gRPC service (`edgekit serve --grpc-port`), see service.py.

open_inference_grpc.proto is KServe's (Apache-2.0, kserve/open-inference-protocol
specification/protocol/open_inference_grpc.proto at d49cc23, 2025-05-11), unchanged. Its package and
service names (`inference.GRPCInferenceService`) are Triton's too, so tritonclient.grpc talks to it.
The *_pb2*.py modules are generated from it and committed, so a device needs grpcio and protobuf but
not grpcio-tools. Regenerate (from the repository root, grpcio-tools 1.81.1 -> protobuf gencode 6.33.5,
hence protobuf>=6.33.5 and grpcio>=1.81.1 in the [serve] extra):
    python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. edgekit/serve/grpc/open_inference_grpc.proto
The messages register as `inference.*` in protobuf's default pool, as tritonclient.grpc's do:
import one or the other in a process, not both (the tests run the server as a subprocess).
"""
