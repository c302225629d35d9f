"""A measured device profile (written by `edgekit profile run`) as an emulate target.

`edgekit emulate model.tflite --target mypi.json` costs every op with the coefficients the probes
fitted on that device, at a thread count the profile measured. A file that is not such a profile is
refused with one line naming the file and the field, before any costing.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from . import costmodel, opmodel
from .run import PROFILE_FORMAT


@dataclass(frozen=True)
class MeasuredDevice:
    name: str
    description: str
    cores: int            # the largest thread count measured: emulate's default
    ram_mb: float
    cache_bytes: int
    threads: dict         # "n" -> {"coefficients": ..., "band_log": ...}
    path: str

    @property
    def measured_threads(self) -> list[int]:
        return sorted(int(n) for n in self.threads)

    def check_threads(self, threads: int) -> None:
        if str(threads) not in self.threads:
            measured = ",".join(map(str, self.measured_threads))
            raise InputError(f"--threads {threads}: {self.path} was profiled at threads {measured}; "
                             f"rerun edgekit profile run --threads {measured},{threads}")


def is_profile_path(target: str) -> bool:
    return target.endswith(".json") or "/" in target or "\\" in target


def load_profile(path: str | Path) -> MeasuredDevice:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"device profile {str(path)!r} does not exist; write one with edgekit profile run -o {path}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"device profile {str(path)!r} is not readable JSON ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120]}); rewrite it with edgekit profile run") from e
    return _validated(raw, str(path))


def _validated(raw, where: str) -> MeasuredDevice:
    def bad(field: str, expected: str) -> InputError:
        return InputError(f"device profile {where!r}: {field} must be {expected}; "
                          "rewrite it with edgekit profile run (built-in targets: edgekit targets)")

    if not isinstance(raw, dict):
        raise bad("the document", "a JSON object")
    if raw.get("edgekit_profile") != PROFILE_FORMAT:
        raise bad("'edgekit_profile'", f"{PROFILE_FORMAT} (a profile written by edgekit profile run)")
    for field, kind in (("name", str), ("description", str)):
        if not isinstance(raw.get(field), kind):
            raise bad(f"'{field}'", "a string")
    for field in ("ram_mb", "cache_bytes"):
        if not _number(raw.get(field)) or raw[field] <= 0:
            raise bad(f"'{field}'", "a positive number")
    threads = raw.get("threads")
    if not isinstance(threads, dict) or not threads:
        raise bad("'threads'", "an object of thread count -> fitted coefficients")
    for n, entry in threads.items():
        if not n.isdigit() or int(n) < 1:
            raise bad(f"'threads' key {n!r}", "a positive thread count")
        coefs = entry.get("coefficients") if isinstance(entry, dict) else None
        if not isinstance(coefs, dict) or "_global" not in coefs:
            raise bad(f"'threads.{n}.coefficients'", "an object with '_global' and per-op-kind coefficients")
        for k, c in coefs.items():
            names = costmodel.GLOBAL_FEATURES if k == "_global" else costmodel.family(k)
            required = [f for f in names if not _later(k, f, c)]
            if not isinstance(c, dict) or any(not _number(c.get(f)) or c[f] < 0 for f in required):
                raise bad(f"'threads.{n}.coefficients.{k}'", f"non-negative numbers for {', '.join(names)}")
        curve = entry.get("stream_curve", [])
        if not isinstance(curve, list) or any(not isinstance(c, list) or len(c) != 2 or not all(map(_number, c))
                                              or c[0] <= 0 or c[1] < 1 for c in curve):
            raise bad(f"'threads.{n}.stream_curve'", "a list of [footprint bytes > 0, factor >= 1] pairs")
        res = entry.get("residuals", [])
        if not isinstance(res, list) or any(
                not isinstance(r, list) or len(r) != 3 or not isinstance(r[0], str) or not isinstance(r[1], list)
                or not all(map(_number, r[1])) or not _number(r[2]) or r[2] <= 0 for r in res):
            raise bad(f"'threads.{n}.residuals'", "a list of [op kind, shape key numbers, ratio > 0]")
        spill = entry.get("spill")  # absent in profiles written before the rules: the first rule
        if spill is not None and not (isinstance(spill, dict) and _number(spill.get("threshold"))
                                      and spill["threshold"] > 0 and isinstance(spill.get("excess"), bool)):
            raise bad(f"'threads.{n}.spill'", "an object with a threshold > 0 (of the cache) and excess true or false")
        models = entry.get("op_models", {})
        if not isinstance(models, dict) or any(not _op_model_ok(k, m) for k, m in models.items()):
            raise bad(f"'threads.{n}.op_models'", "an object of op kind -> {tiles: 3 positive integers, "
                      "coefficients: 5 non-negative numbers, points: lists of 5 shape key numbers and a log ratio within +-log 3, "
                      "optionally wide: [width, cost per column > 0], remainder: [width, cost in tiles > 0], tap_floor: 1..64 "
                      "and filter_spill: [bytes, cost per MAC > 0]}")
        scaling = entry.get("scaling")
        if scaling is not None:
            base = threads.get(str(entry.get("base_threads")))
            if not isinstance(base, dict) or base is entry or "scaling" in base:
                raise bad(f"'threads.{n}.base_threads'", "a measured thread count without its own scaling")
            # a family added since the profile was written may be missing (its ops take the older family's)
            groups = [("_global", costmodel.GLOBAL_FEATURES)] + [
                (f, costmodel.THREAD_FEATURES) for f in costmodel.THREAD_FAMILIES
                if not (f in costmodel.LATER_THREAD_FAMILIES and isinstance(scaling, dict) and f not in scaling)]
            if not isinstance(scaling, dict) or any(
                    not isinstance(scaling.get(g), dict) or any(not _number(scaling[g].get(f)) or scaling[g][f] < 0
                                                                for f in names if not _later(g, f, scaling[g]))
                    for g, names in groups):
                raise bad(f"'threads.{n}.scaling'", "non-negative numbers per thread family (edgekit.profile.costmodel)")
        band = entry.get("band_log")
        if not isinstance(band, dict) or not (_number(band.get("low")) and _number(band.get("high"))):
            raise bad(f"'threads.{n}.band_log'", "an object with numbers low and high")
    return MeasuredDevice(raw["name"], raw["description"], max(int(n) for n in threads), float(raw["ram_mb"]),
                          int(raw["cache_bytes"]), threads, where)


def _whole(value, most: int) -> bool:
    """An integer (not a bool) from 1 to `most`."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most


def _trait_ok(value, most: int) -> bool:
    """An optional kernel trait [size from 1 to `most`, cost factor in (0, 16]]; absent is fine."""
    return value is None or (isinstance(value, list) and len(value) == 2 and _whole(value[0], most)
                             and _number(value[1]) and 0 < value[1] <= 16)


def _op_model_ok(kind_name, m) -> bool:
    """A kernel model (edgekit.profile.opmodel) of a kind it can model, with numbers where they belong."""
    if not isinstance(kind_name, str) or kind_name.split("/")[0] not in opmodel.MODELLED or not isinstance(m, dict):
        return False
    tiles, coefs, points = m.get("tiles"), m.get("coefficients"), m.get("points", [])
    # the traits are absent in profiles written before them, and where the device's grid shows none
    if not (_trait_ok(m.get("wide"), opmodel.MAX_TILE) and _trait_ok(m.get("remainder"), opmodel.MAX_TILE)
            and _trait_ok(m.get("filter_spill"), 2 ** 30)
            and (m.get("tap_floor") is None or _whole(m["tap_floor"], 64))):
        return False
    return (kind_name.split("/")[-1] in ("fp32", "int8")
            and isinstance(tiles, list) and len(tiles) == 3 and all(_whole(t, opmodel.MAX_TILE) for t in tiles)
            and isinstance(coefs, list) and len(coefs) == opmodel.N_FEATURES and all(_number(c) and c >= 0 for c in coefs)
            and isinstance(points, list)
            and all(isinstance(p, list) and len(p) == 6 and all(map(_number, p)) and abs(p[-1]) <= opmodel.MAX_LOG_RATIO + 1e-6
                    and all(abs(v) < 1e6 for v in p) for p in points))


def _later(group: str, feature: str, coefficients) -> bool:
    """A whole-model or per-kind feature added after this profile was written: it may be missing (costed at 0)."""
    later = costmodel.LATER_GLOBAL_FEATURES if group == "_global" else costmodel.LATER_KIND_FEATURES
    return feature in later and isinstance(coefficients, dict) and feature not in coefficients


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def estimate_measured(graph, device: MeasuredDevice, threads: int):
    """emulator.Estimate from the device's own fitted coefficients."""
    from ..emulator import Estimate, OpEstimate, memory_mb

    device.check_threads(threads)
    entry = device.threads[str(threads)]
    coefs = entry["coefficients"]
    residuals = costmodel.transferable(entry.get("residuals"))
    if "scaling" in entry:  # this thread count as a scaling of the base count's op costs
        base = device.threads[str(entry["base_threads"])]
        base = {**base, "residuals": costmodel.transferable(base.get("residuals"))}
        rows = costmodel.scaled_rows(graph, base, device.cache_bytes, entry.get("stream_curve"))
        total = costmodel.scaled_seconds(rows, entry["scaling"]) * 1e3
        ops = [OpEstimate(op.index, op.type, op.precision,
                          costmodel.scaled_op_seconds(graph, op, base, entry["scaling"]) * 1e3, "measured")
               for op in graph.ops]
    else:
        models = entry.get("op_models")
        terms = costmodel.graph_terms(graph, device.cache_bytes, entry.get("stream_curve"), residuals, models,
                                      entry.get("spill"))
        total = costmodel.predict_seconds_terms(terms, coefs) * 1e3
        ops = [OpEstimate(op.index, op.type, op.precision,
                          costmodel.op_seconds(graph, op, coefs, residuals, models) * 1e3, "measured")
               for op in graph.ops]
    band = entry["band_log"]
    memory = memory_mb(graph)
    return Estimate(device.name, threads, total, total * math.exp(band["low"]), total * math.exp(band["high"]),
                    memory["total"], memory, memory["total"] <= device.ram_mb * 0.5, ops, graph.uncosted,
                    method=f"per-op-kind costs measured on the device by edgekit profile run ({device.path})")
