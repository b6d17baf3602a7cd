# Copyright 2026 The kron-transformers Authors. Licensed under the Apache License, Version 2.0.
"""Peak memory of ``compress()``: BERT_BASE (``BertForMaskedLM``, random weights) to KroneckerBERT_8, fresh process.

    python benchmarks/compress_memory.py [--label NAME] [--compression kronecker-bert-8] [--threads 2]

The child process imports torch, Transformers and ``kron_transformers``, builds the dense model, then resets the
kernel's resident-set high-water mark (``/proc/self/clear_refs``) and compresses. Reported: the resident MiB before
compressing (dense model loaded), the peak during ``compress()``, and the peak's excess over the start -- what
compressing costs on top of holding the dense model (the dense model itself is 418 MiB in float32). To compare with
another version of the package, run this script with ``PYTHONPATH=<that checkout>/src`` and another ``--label``: the
rows of every label are kept in ``benchmarks/results/compress_memory.{json,md}``. Linux only.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path


RESULTS = Path(__file__).resolve().parent / "results"

CHILD = """
import json, time, torch, kron_transformers
from transformers import BertConfig, BertForMaskedLM
torch.set_num_threads({threads})

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

dense = BertForMaskedLM(BertConfig()).eval()
start = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
began = time.perf_counter()
student = kron_transformers.compress(dense, {compression!r}, show_progress=False)
seconds = time.perf_counter() - began
print(json.dumps({{"start_mib": start, "peak_mib": status("VmHWM:"), "seconds": seconds,
                  "package": kron_transformers.__file__, "student_parameters": student.num_parameters()}}))
"""


def measure(compression, threads: int) -> dict:
    code = CHILD.format(threads=threads, compression=compression)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the measuring process failed:\n{result.stderr[-3000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["excess_mib"] = row["peak_mib"] - row["start_mib"]
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="current", help="the row's name (e.g. the commit measured)")
    parser.add_argument("--compression", default="kronecker-bert-8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes; the lowest peak is kept")
    args = parser.parse_args(argv)
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("compress_memory.py reads /proc (Linux only).")
    runs = [measure(args.compression, args.threads) for _ in range(args.repeats)]
    row = dict(min(runs, key=lambda r: r["peak_mib"]))
    row.update(compression=args.compression, threads=args.threads, runs=runs)

    json_path = RESULTS / "compress_memory.json"
    rows = json.loads(json_path.read_text()) if json_path.is_file() else {}
    rows[args.label] = row
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| version | RSS with the dense model | peak during compress() | excess | seconds |",
             "|---|---|---|---|---|"]
    lines += [f"| {label} | {r['start_mib']:.0f} MiB | {r['peak_mib']:.0f} MiB | {r['excess_mib']:.0f} MiB | "
              f"{r['seconds']:.1f} |" for label, r in rows.items()]
    markdown = ("# Peak memory of compress(): BERT_BASE (BertForMaskedLM) to " + args.compression + "\n\n"
                + "\n".join(lines) + "\n")
    (RESULTS / "compress_memory.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
