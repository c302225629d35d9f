"""A longer fuzzing run of `.tflite` loading than the CI test (tests/test_fuzz.py), same harness.

    python benchmarks/fuzz_bench.py [--mutants 2000] [--seed 0] [--workers 2] [--json out.json] [MODEL ...]

Prints mutants/s and the outcomes by class: ok, ArtifactError, InputError (and any other
EdgekitError), crash (the worker died of a signal), hang (no answer within --timeout), foreign
(any exception that is not an EdgekitError). Only the last three are bugs; each is listed with its
mutant number and mutation so `--seed` reproduces it. Models default to the harness's set plus
$EDGEKIT_FUZZ_MODELS (e.g. MediaPipe's face_detection_full_range_sparse.tflite).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzzing  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--mutants", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=30.0, help="Seconds before a mutant counts as a hang.")
    ap.add_argument("--isolate", action="store_true", help="Load with edgekit.load(..., isolate=True).")
    ap.add_argument("--json", type=Path, help="Write every result as JSON.")
    args = ap.parse_args()
    models = args.models or fuzzing.default_models()
    campaign = fuzzing.run_campaign(models, args.mutants, args.seed, args.workers, args.timeout, args.isolate)
    counts = campaign.counts()
    print(f"models: {', '.join(m.name for m in models)}")
    print(f"{campaign.mutants} mutants, seed {args.seed}, {args.workers} workers: {campaign.seconds:.1f} s, "
          f"{campaign.mutants / campaign.seconds:.1f} mutants/s")
    width = max(len(k) for k in ["outcome", *counts])
    print(f"{'outcome':<{width}}  count  share")
    for outcome in ["ok", "ArtifactError", "InputError",
                    *sorted(k for k in counts if k not in ("ok", "ArtifactError", "InputError", "crash", "hang",
                                                           "foreign")), "crash", "hang", "foreign"]:
        n = counts.get(outcome, 0)
        print(f"{outcome:<{width}}  {n:>5}  {100 * n / campaign.mutants:5.1f}%")
    per_model: dict[str, dict[str, int]] = {}
    for r in campaign.results:
        per_model.setdefault(r.model, {}).setdefault(r.outcome, 0)
        per_model[r.model][r.outcome] += 1
    for name, c in per_model.items():
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    for r in campaign.bad()[:30]:
        print(f"BAD #{r.index} {r.model} {r.outcome} {r.error}: {r.mutation} -> {r.message}")
    if args.json:
        args.json.write_text(json.dumps(campaign.to_dict(), indent=2) + "\n")
        print(f"json: {args.json}")
    return 1 if campaign.bad() else 0


if __name__ == "__main__":
    sys.exit(main())
