"""The ``bitsback`` command.

Exit status: 0 success, 1 a bitsback error (bad input, corrupt file, wrong model, an
output that exists, an optional package that is not installed), 2 a usage error,
3 a file whose networks compute differently on this machine than on the one that made it
(RuntimeMismatchError: the file is fine; decode it on a machine like that one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None, lambda: None
    bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=None, leave=False)
    return bar.update, bar.close


def _emit(result: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        print("\n".join(lines))


def _range(text):
    if text is None:
        return None, None
    try:
        a, b = text.split(":")
        return (int(a) if a else None), (int(b) if b else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--range takes A:B (image indices), got {text!r}") from None


def cmd_compress(a) -> int:
    from . import engine

    out = Path(a.output)
    if out.exists() and not a.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite")
    src = engine.open_source(a.input)
    update, close = _progress(src.n, "compress", not a.quiet)
    t0 = time.perf_counter()
    try:
        res = engine.compress(
            a.input, out, a.model, workers=a.workers, engine=a.engine, address=a.address, binarize=a.binarize,
            force=a.force, verify=a.verify, progress=update, device=a.device, k_steps=a.k_steps, lr=a.lr,
            lanes=a.lanes, seed=a.seed,
        )
    finally:
        close()
    seconds = time.perf_counter() - t0
    n = res["n_images"]
    res.update({
        "seconds": seconds,
        "images_per_second": n / seconds if seconds > 0 else float("inf"),
        "k_steps": a.k_steps,
        "output": str(out),
        "verified": res["verified"],
    })
    _emit(res, a.json, [
        f"{', '.join(a.input)} -> {out}: {n} images, {res['bytes']} bytes, {res['bits_per_dim']:.4f} bits/dim, "
        f"{res['images_per_second']:.0f} images/s (model {res['model']}, K={a.k_steps}, lanes={res['lanes']}, "
        f"shards={res['shards']})"
        + (", verified" if res["verified"] else "")
    ])
    return 0


def cmd_decompress(a) -> int:
    from . import engine

    start, stop = _range(a.range)
    t0 = time.perf_counter()
    res = engine.decompress(
        a.input, a.output, a.model, workers=a.workers, engine=a.engine, address=a.address, start=start, stop=stop,
        force=a.force, device=a.device,
    )
    seconds = time.perf_counter() - t0
    n = res["n_images"]
    res.update({"seconds": seconds, "images_per_second": n / seconds if seconds > 0 else float("inf")})
    _emit(res, a.json, [f"{a.input} -> {a.output}: {n} images, {res['images_per_second']:.0f} images/s"])
    return 0


def info_lines(h: dict) -> list[str]:
    """A file's header in a few short lines (``bitsback info``; ``--json`` has all of it)."""
    shards = h["shards"]
    counts = [s[0] for s in shards]
    p = h["precision"]
    return [
        f"model       {h['model']['name']} (sha256 {h['model']['sha256'][:16]}…), {h['likelihood']}"
        + (f", made from folder {h['model']['dir']}" if isinstance(h["model"].get("dir"), str) else ""),
        f"images      {h['n']} × {'x'.join(map(str, h['shape']))} {h['dtype']}, {h['levels']} levels",
        f"size        {h['file_bytes']} bytes, {h['bits_per_dim']:.4f} bits/dim "
        f"(payload {h['payload_bytes']}, header and checksum {h['file_bytes'] - h['payload_bytes']})",
        f"lanes       {h['lanes']} in {len(shards)} shard{'s' * (len(shards) != 1)} "
        f"({min(counts)}–{max(counts)} images each)" if len(shards) > 1 else
        f"lanes       {h['lanes']} in 1 shard",
        f"inference   K = {h['k_steps']}" + (f" Adam steps, lr {h['lr']}" if h["k_steps"] else " (amortized)")
        + f", seed {h['seed']}, {len(h.get('inactive_dims', []))} of {h['latent']} latent dims not coded",
        f"precision   likelihood {p['likelihood']}, posterior {p['posterior']}, latent {p['latent_bits']} bits",
        arithmetic_line(h),
        f"format      .bba version {h['version']}, data sha256 {h['data_sha256'][:16]}…",
    ]


def arithmetic_line(h: dict) -> str:
    """``bitsback info``'s arithmetic line: how the file's networks compute, which decides
    where it decodes (header.arithmetic_of), and the runtime that made it."""
    from .header import arithmetic_of
    from .runtime import summary

    a = arithmetic_of(h)
    made = summary(h.get("runtime"))
    if a is None:
        return f"arithmetic  float, no fingerprint (before version 5): decodes where the networks compute as on {made}"
    if a["kind"] == "portable":
        return f"arithmetic  portable (version {a['version']}): decodes on any machine; made on {made}"
    return f"arithmetic  float, fingerprint {a['fingerprint']}: decodes where the networks compute as on {made}"


def cmd_info(a) -> int:
    from .header import info

    h = info(Path(a.input).read_bytes())
    _emit(h, a.json, info_lines(h))
    return 0


def cmd_models(a) -> int:
    from . import zoo

    return zoo.models_main(["--json"] if a.json else []) or 0


def show_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Write every option's default into its help text, in ``parser`` and its subcommands
    (argparse's own ArgumentDefaultsHelpFormatter skips options without help text)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                show_defaults(sp)
        elif (action.option_strings and action.default is not None and action.default is not False
              and action.default is not argparse.SUPPRESS and "%(default)" not in (action.help or "")):
            action.help = ((action.help + " ") if action.help else "") + "(default: %(default)s)"
    return parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bitsback", description="Lossless image-dataset compression with VAEs and bits-back ANS.")
    p.add_argument("-v", "--verbose", action="store_true", help="say which provider runs the networks")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, json_help="print one JSON object as the last line of stdout"):
        sp.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        sp.add_argument("--workers", type=int, default=None, help="worker processes (default: the cores available)")
        sp.add_argument("--engine", default="local", choices=["local", "ray"], help="local processes or a Ray cluster")
        sp.add_argument("--address", default=None, help="Ray cluster address (with --engine ray)")
        sp.add_argument("--force", action="store_true", help="overwrite an existing output")
        sp.add_argument("--json", action="store_true", help=json_help)
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    c = sub.add_parser("compress", help="compress a dataset file to .bba")
    c.add_argument("input", nargs="+", help=".idx/.idx.gz, .npy, .npz, .amat, CIFAR-10 batch, or a folder of PNGs (several are concatenated)")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--model", default=None, help="bundled model name or exported model directory (default: the "
                   "bundled model whose image shape and levels fit the input; `bitsback models` lists them)")
    c.add_argument("--k-steps", type=int, default=0, help="Adam steps of per-image inference (Algorithm 2)")
    c.add_argument("--lr", type=float, default=5e-3, help="learning rate of the K steps")
    c.add_argument("--lanes", type=int, default=None, help="independent rANS messages (default: chosen from N)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--binarize", action="store_true", help="threshold pixels at 128 first (binary models)")
    c.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                   help="decode and check the file before writing it (default: on when the networks run on CUDA)")
    common(c)
    c.set_defaults(func=cmd_compress)

    d = sub.add_parser("decompress", help="decompress a .bba file")
    d.add_argument("input")
    d.add_argument("-o", "--output", required=True, help=".npy, .npz, .idx, .idx.gz, or a folder for PNGs")
    d.add_argument("--model", default=None, help="model folder or bundled name to decode with (default: the model "
                   "the file names: bundled, or found in the folder recorded at compress time, in $BITSBACK_MODEL_PATH "
                   "or beside the file)")
    d.add_argument("--range", default=None, help="decode only images A:B (only the shards holding them are read)")
    common(d)
    d.set_defaults(func=cmd_decompress)

    i = sub.add_parser("info", help="summarise a .bba file's header")
    i.add_argument("input")
    i.add_argument("--json", action="store_true", help="the whole header as one JSON object")
    i.set_defaults(func=cmd_info)

    m = sub.add_parser("models", help="list bundled models with their recorded metrics")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    for name, help_ in (
        ("fit", "train, export and measure a model for your own images in one command (needs torch)"),
        ("train", "train a VAE or an encoder objective (needs torch)"),
        ("export", "export a trained VAE to ONNX"),
        ("bench", "measure rate, throughput, per-image latency, the K sweep and classical codecs"),
    ):
        s = sub.add_parser(name, help=help_, add_help=False)
        s.add_argument("rest", nargs=argparse.REMAINDER)
        s.set_defaults(func=None, passthrough=name)
    return show_defaults(p)


# Optional packages and the extra that installs each (pyproject.toml's optional-dependencies).
EXTRAS = {"torch": "train", "onnx": "train", "matplotlib": "bench", "constriction": "bench", "zstandard": "bench",
          "pillow_jxl": "bench", "ray": "ray"}


def _missing(e: ModuleNotFoundError) -> str:
    """One line for a command that needs a package this installation lacks."""
    name = (e.name or "").split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        raise e             # not an optional package: a broken installation, let it show
    return f"bitsback: error: this needs {name}, which is not installed: pip install 'bitsback[{extra}]'"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-v"], ["--verbose"]):
        from . import runtime

        runtime.verbose = True
        argv = argv[1:]
    try:
        if argv and argv[0] in ("fit", "train", "export", "bench"):
            import importlib

            return importlib.import_module(f"bitsback.{argv[0]}").main(argv[1:]) or 0
        return _run(build_parser().parse_args(argv))
    except ModuleNotFoundError as e:
        print(_missing(e), file=sys.stderr)
        return 1


def _run(args) -> int:
    from .errors import BitsbackError, RuntimeMismatchError

    try:
        return args.func(args)
    except RuntimeMismatchError as e:      # its own status: the file is fine, the machine is not the one
        print(f"bitsback: error: {e}", file=sys.stderr)
        return 3
    except (BitsbackError, FileExistsError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"bitsback: error: {e}", file=sys.stderr)
        return 1
    except argparse.ArgumentTypeError as e:
        print(f"bitsback: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, unwritable destination
        print(f"bitsback: error: {e.strerror or e}: {getattr(e, 'filename', '') or ''}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
