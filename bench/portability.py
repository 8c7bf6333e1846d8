"""Do files decode on other CPUs and runtimes? The measurement behind docs/RELIABILITY.md's
portability table.

    python bench/portability.py --data ../shared/data/mnist/t10k-images-idx3-ubyte.gz -n 10000 \\
        --out /tmp/portability [--subset 1000] [--cpus Nehalem,Haswell] [--controls EPYC-Milan] \\
        [--other-python /tmp/ort-old/bin/python ...] [--aarch64-root /tmp/aarch64] [--jobs 2]

For each default model (mnist-grey, mnist-binary; binarised images for the binary one):

1. encode the first N images here (this interpreter: the machine's own CPU);
2. decode those files under ``qemu-x86_64 -cpu CPU`` for each of --cpus and --controls
   (Debian package qemu-user; user-mode emulation of another x86-64 CPU running this same
   interpreter and venv, so only the instruction set differs), and encode the first
   --subset images there;
3. decode each emulated CPU's files here;
4. the same both ways with each --other-python (e.g. a venv with another onnxruntime,
   with bitsback installed in it);
5. with --aarch64-root (the folder ../shared/tools/portability/setup.sh built: an arm64
   CPython, its wheels and a cross-built bitsback), the same both ways under
   ``qemu-aarch64 -cpu neoverse-n1`` (QEMU_CPU picks another, e.g. max: SVE and SME;
   ROOT/sysroot/proc/cpuinfo is rewritten for it, as run.sh does). That bitsback is the
   checkout setup.sh copied (ROOT/BUILD_INFO says which commit), without AOT kernels, so
   numba compiles there first (minutes), and emulated arm64 is slow: use a smaller -n.
   Without it the script prints how to get it. To refresh only that bitsback copy after
   the checkout changed (no downloads; reruns setup.sh's "bitsback for aarch64" step):

       ROOT=/tmp/aarch64 CHECKOUT=$PWD GIT_OPTIONAL_LOCKS=0 bash -c '
         set -euo pipefail; source ../shared/tools/portability/common.sh
         log() { echo "[refresh $(date +%H:%M:%S)] $*"; }
         CYTHON_VER=$("$ROOT/hostvenv/bin/cython" --version 2>&1 | awk "{print \\$NF}")
         rm -rf "$SITE/bitsback"
         eval "$(sed -n "/^# --- bitsback for aarch64/,/^# --- smoke test/p" ../shared/tools/portability/setup.sh)"'

Controls are emulated CPUs with the host's own instruction set (EPYC-Milan: AVX2+FMA, no
AVX-512, like the machine this was written on): a failure there would be the emulation's,
not the instruction set's. qemu 7.2's TCG emulates up to AVX2+FMA: the AVX-512 and VNNI
bits of -cpu Skylake-Server / Icelake-Server / Cooperlake are dropped (qemu warns
"TCG doesn't support requested feature") and those instructions raise SIGILL, so such
models behave as Haswell and are not listed.

Every run is tests/xisa_worker.py in a subprocess, with cwd, byte code and numba's cache
under --out: nothing is written in the checkout. Prints a markdown table (encoder ->
decoder, model, images, bits/dim of the file, whether a file made elsewhere has the same
payload bytes as the same images coded here, result: "exact" or the typed error, decode
seconds) and writes it with every worker's JSON report to --out; exits 0 only when every
decode was exact.
"""
import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "xisa_worker.py"
MODELS = ["mnist-grey", "mnist-binary"]


class Env:
    """One place to run the worker: a name, and the command prefix (interpreter included)."""

    def __init__(self, name, prefix, env=None, drop=()):
        self.name, self.prefix, self.env, self.drop = name, list(prefix), dict(env or {}), tuple(drop)


def safe(name):
    """name as one path component."""
    return "".join(c if c.isalnum() or c in "-_.," else "_" for c in name)


def run_worker(where, out, tag, args, log):
    """Run the worker as ``where`` with args; its JSON report (or {"error": ...})."""
    cache = out / "numba" / safe(where.name)
    cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1", **where.env)
    for k in ("BITSBACK_JIT", *where.drop):
        env.pop(k, None)
    cmd = [*where.prefix, str(WORKER), *map(str, args)]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t
    (out / "logs").mkdir(exist_ok=True)
    (out / "logs" / f"{safe(tag)}.log").write_text(f"$ {shlex.join(cmd)}\n{p.stdout}\n--- stderr\n{p.stderr}")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = [ln for ln in p.stderr.splitlines() if "TCG doesn't support" not in ln][-3:]
        rep = {"error": f"worker exited {p.returncode}: {' | '.join(tail)}"}
    else:
        rep = json.loads(lines[-1])
    rep["wall_s"] = round(secs, 1)
    log(f"{tag}: {secs:.0f} s" + (f" ({rep['error']})" if "error" in rep else ""))
    return rep


def short(res):
    """'exact', or the error's type and the start of its message."""
    if res == "exact":
        return res
    kind, _, msg = res.partition(": ")
    return f"{kind} ({msg[:60]})" if msg else kind


def describe(rep):
    e = rep.get("env")
    if not e:
        return rep.get("error", "?")
    v = e["versions"]
    return (f"{e['machine']} {e['llvm_cpu']}, kernels {e['kernels']}, onnxruntime {v['onnxruntime']}, "
            f"numpy {v['numpy']}, numba {v['numba']}, python {e['python']}, bitsback at {e['bitsback_path']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="images to encode (bitsback.datasets.load: IDX, .npy, ...)")
    ap.add_argument("-n", type=int, default=10000, help="images encoded here (default 10000)")
    ap.add_argument("--subset", type=int, default=1000, help="images encoded on each other side (default 1000)")
    ap.add_argument("--out", required=True, type=Path, help="folder for files, logs and results (outside the checkout)")
    ap.add_argument("--cpus", default="Nehalem,Haswell", help="qemu-x86_64 -cpu models to check")
    ap.add_argument("--controls", default="EPYC-Milan", help="qemu-x86_64 -cpu models with the host's instruction set ('' for none)")
    ap.add_argument("--other-python", action="append", default=[], metavar="PATH",
                    help="another interpreter with bitsback installed (e.g. an older onnxruntime); repeatable")
    ap.add_argument("--aarch64-root", type=Path, help="ROOT of ../shared/tools/portability/setup.sh (e.g. /tmp/aarch64)")
    ap.add_argument("--lanes", type=int, default=None, help="default: the codec chooses from the number of images")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="workers run at once (default: cores)")
    a = ap.parse_args()

    out = a.out.resolve()
    if out == ROOT or ROOT in out.parents:
        ap.error(f"--out {out} is inside the checkout; use a scratch folder")
    out.mkdir(parents=True, exist_ok=True)
    data = Path(a.data).resolve()
    models = a.models.split(",")
    qemu = shutil.which("qemu-x86_64")
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    native = Env("native", [sys.executable])
    others = []     # (kind, Env): encode a subset there, decode the native files there
    cpus = [c for c in a.cpus.split(",") if c]
    controls = [c for c in a.controls.split(",") if c]
    if qemu:
        others += [("cpu", Env(f"qemu-x86_64 -cpu {c}", [qemu, "-cpu", c, sys.executable])) for c in cpus]
        others += [("control", Env(f"qemu-x86_64 -cpu {c}", [qemu, "-cpu", c, sys.executable])) for c in controls]
    else:
        log("qemu-x86_64 not found (Debian package qemu-user): emulated x86 CPUs skipped")
    for py in a.other_python:
        # its own bitsback: a PYTHONPATH meant for this interpreter would shadow it
        others.append(("python", Env(f"python {py}", [py], drop=["PYTHONPATH"])))
    aarch64_hint = None
    if a.aarch64_root:
        r = a.aarch64_root.resolve()
        sysroot, site = r / "sysroot", r / "site"
        qa = shutil.which("qemu-aarch64")
        if not ((site / "bitsback" / "__init__.py").is_file() and (r / "bin" / "cpuinfo").is_file() and qa):
            ap.error(f"--aarch64-root {r}: no arm64 environment there (or no qemu-aarch64): "
                     "run ../shared/tools/portability/setup.sh first")
        qcpu = os.environ.get("QEMU_CPU", "neoverse-n1")
        # as run.sh does: the sysroot's /proc/cpuinfo (served by -L) describes the emulated core,
        # for onnxruntime's and LLVM's CPU detection
        info = subprocess.run([qa, "-cpu", qcpu, "-L", str(sysroot), str(r / "bin" / "cpuinfo"), str(os.cpu_count())],
                              capture_output=True, text=True, check=True).stdout
        (sysroot / "proc" / "cpuinfo").write_text(info)
        # as common.sh's apy(): the sysroot's CPython, its /proc/cpuinfo (-L), packages from site/
        others.append(("aarch64", Env(f"qemu-aarch64 -cpu {qcpu}",
                                      [qa, "-cpu", qcpu, "-L", str(sysroot), str(sysroot / "usr/bin/python3.11"), "-s"],
                                      {"PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"})))
    else:
        aarch64_hint = ("aarch64: not run. Build the arm64 environment once (bash ../shared/tools/portability/setup.sh .), "
                        "then add --aarch64-root /tmp/aarch64 (or run ../shared/tools/portability/run.sh); "
                        "bench/portability.py's docstring says how to refresh its bitsback.")

    def dirname(env):
        return out / "files" / safe(env.name)

    common = ["--images", data, "--models", ",".join(models)] + (["--lanes", a.lanes] if a.lanes else [])
    log(f"native: encode {a.n} images")
    nat = run_worker(native, out, "native-encode", ["--encode", dirname(native), "--n", a.n, *common], log)
    if "error" in nat:
        sys.exit(f"native encode failed: {nat['error']}")
    # the subset too, so that each other side's payload can be compared with this CPU's
    nat_sub = run_worker(native, out, "native-encode-subset", ["--encode", out / "files" / "native-subset",
                                                               "--n", a.subset, *common], log)

    def other_run(item):
        kind, env = item
        return run_worker(env, out, f"{env.name}", ["--decode", dirname(native), "--encode", dirname(env),
                                                    "--n", a.subset, *common], log)

    def back_run(item):
        kind, env = item
        if "encoded" not in reps[env.name]:
            return {"error": "nothing encoded there"}
        return run_worker(native, out, f"native-decode-{env.name}", ["--decode", dirname(env), "--models", ",".join(models)], log)

    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        reps = dict(zip([e.name for _, e in others], pool.map(other_run, others)))
        backs = dict(zip([e.name for _, e in others], pool.map(back_run, others)))

    # ------------------------------------------------------------------ the table
    rows = []

    def rate(rep, m):
        enc = rep.get("encoded", {}).get(m)
        return f"{8 * enc['bytes'] / (enc['images'] * enc['dims']):.4f}" if enc else "—"

    def same(rep, m):
        mine, there = nat_sub.get("encoded", {}).get(m), rep.get("encoded", {}).get(m)
        if not (mine and there):
            return "—"
        return "same" if mine["payload_sha256"] == there["payload_sha256"] else "differs"

    def result(rep, m):
        if "error" in rep:
            return short(rep["error"]), "—"
        d = rep.get("decoded", {}).get(m)
        return (short(d["result"]), f"{d['seconds']:.0f}") if d else ("—", "—")

    for m in models:
        for kind, env in others:
            label = env.name + (" (control)" if kind == "control" else "")
            res, secs = result(reps[env.name], m)
            rows.append(f"| native → {label} | {m} | {a.n} | {rate(nat, m)} | — | {res} | {secs} |")
            res, secs = result(backs[env.name], m)
            rows.append(f"| {label} → native | {m} | {a.subset} | {rate(reps[env.name], m)} | "
                        f"{same(reps[env.name], m)} | {res} | {secs} |")
    cmd = shlex.join([os.path.relpath(sys.executable) if sys.executable.startswith(str(ROOT)) else sys.executable,
                      *sys.argv])
    envs = [f"- native: {describe(nat)}"] + [f"- {e.name}: {describe(reps[e.name])}" for _, e in others]
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, env=dict(os.environ, GIT_OPTIONAL_LOCKS="0")).stdout.strip()
    except OSError:
        commit = "?"
    text = "\n".join([
        f"Portability, {time.strftime('%Y-%m-%d')}, script at {commit or '?'} (bitsback: see below): `{cmd}`",
        "",
        "| encoder → decoder | model | images | bits/dim | payload vs native | result | decode s |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        *envs,
        *([f"- {aarch64_hint}"] if aarch64_hint else []),
        f"- total {time.perf_counter() - t0:.0f} s, --jobs {a.jobs}; logs and reports in {out}",
    ])
    print(text)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"native": nat, "others": reps, "back": backs}, indent=1))
    ok = all(r.get("decoded", {}).get(m, {}).get("result") == "exact"
             for r in [*reps.values(), *backs.values()] for m in models)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
