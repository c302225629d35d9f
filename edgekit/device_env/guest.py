"""Runs INSIDE the device sysroot, on the device's Python, under an emulated Cortex core.

It imports only what a Pi has after `pip install edgekit` (numpy, ai_edge_litert, edgekit) and
talks to the host through files in its job folder: request.json and inputs.npz in, result.json and
outputs.npz out. Inputs are raw tensor values (already quantized), keyed "<input>_<sample>", so the
host and the device feed bit-identical bytes. Native log lines (delegate messages) are captured from
file descriptor 2, where LiteRT writes them, and handed back for the host to parse.
"""
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def delegated_nodes(ops):
    """Original nodes each DELEGATE node replaced: walking back from a DELEGATE node's outputs
    through the producing original nodes, stopping at its inputs, gives its partition (the Python
    API shows every node, replaced ones included, but not the execution plan)."""
    original = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op for op in original for t in op["outputs"]}
    taken = {}
    for op in ops:
        if op["op_name"] != "DELEGATE":
            continue
        boundary = {int(t) for t in op["inputs"]}
        stack = [int(t) for t in op["outputs"]]
        while stack:
            tensor = stack.pop()
            node = producer.get(tensor)
            if tensor in boundary or node is None or node["index"] in taken:
                continue
            taken[node["index"]] = node["op_name"]
            stack.extend(int(t) for t in node["inputs"] if t >= 0)
    return original, taken


def cpu_features():
    """The emulated core's ISA as the kernel (here qemu) advertises it to the runtime: AT_HWCAP bits
    that decide which XNNPACK kernels run (dotprod for int8 on A76, fp16 arithmetic)."""
    import ctypes

    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    hwcap = libc.getauxval(16)  # AT_HWCAP
    bits = {"atomics": 8, "fphp": 9, "asimdhp": 10, "asimddp": 20}
    return sorted(name for name, bit in bits.items() if hwcap >> bit & 1)


def checkpoint(job, result, stage):
    result["stage"] = stage
    (job / "result.json").write_text(json.dumps(result))


def main(job):
    request = json.loads((job / "request.json").read_text())
    if request.get("site"):
        sys.path.insert(0, request["site"])
    result = {"python": platform.python_version(), "machine": platform.machine(), "loaded": False,
              "cpu_features": cpu_features()}
    start = time.perf_counter()
    try:
        import ai_edge_litert
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        result["error"] = f"the device install is incomplete: {e}"
        return result
    result["numpy"] = np.__version__
    result["litert"] = getattr(ai_edge_litert, "__version__", "?")
    try:
        import edgekit  # the device install itself must import on the device (no TensorFlow there)
        result["edgekit"] = edgekit.__version__
    except Exception as e:  # noqa: BLE001 -- reported, not fatal: the runtime check below still tells the story
        result["edgekit_error"] = f"{type(e).__name__}: {e}"
    result["import_s"] = time.perf_counter() - start

    checkpoint(job, result, "loading")  # a runtime that crashes (SIGSEGV) leaves this for the host to report
    log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 -- fd 2 points at it across the load; closed at exit
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    try:
        t0 = time.perf_counter()
        interpreter = Interpreter(model_path=request["model"], num_threads=request["threads"])
        interpreter.allocate_tensors()
        result["load_ms"] = (time.perf_counter() - t0) * 1e3
        result["loaded"] = True
    except Exception as e:  # noqa: BLE001 -- whatever the runtime raises is the verdict the host parses
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        log.seek(0)
        result["log"] = log.read().decode("utf-8", "replace")[-8000:]
    if not result["loaded"]:
        return result

    original, taken = delegated_nodes(interpreter._get_ops_details())
    result["nodes"] = [op["op_name"] for op in original]
    result["delegated"] = {str(k): v for k, v in sorted(taken.items())}
    result["delegate_partitions"] = sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())

    inputs_path = job / "inputs.npz"
    if not inputs_path.exists():
        return result
    checkpoint(job, result, "running")
    inputs = np.load(inputs_path)
    samples = request["samples"]
    outputs, times = {}, []
    in_details, out_details = interpreter.get_input_details(), interpreter.get_output_details()
    for s in range(samples):
        for i, detail in enumerate(in_details):
            interpreter.set_tensor(detail["index"], inputs[f"{i}_{s}"])
        t0 = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
        for k, detail in enumerate(out_details):
            outputs[f"{k}_{s}"] = interpreter.get_tensor(detail["index"])
    np.savez(job / "outputs.npz", **outputs)
    result["invoke_ms"] = times
    return result


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    checkpoint(folder, main(folder), "done")
