"""`bitsback bench`: output structure on a tiny model and dataset (no timing assertions)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitsback import bench

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "mnist-t10k-first64-idx3-ubyte.gz"
STATS = {"n", "mean", "p50", "p90", "p99", "max"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from bitsback.export import export_vae
    from bitsback.models import build_vae

    out = tmp_path_factory.mktemp("models") / "tiny-grey"
    cfg = {"arch": "mlp", "image_shape": [28, 28], "levels": 256, "likelihood": "logistic_mixture",
           "latent": 4, "hidden": [16], "mixture": 2}
    torch.manual_seed(0)
    enc, dec = build_vae(cfg)
    export_vae(enc, dec, out, likelihood="logistic_mixture", image_shape=(28, 28), levels=256, config=cfg, mixture=2)
    other = out.parent / "other"
    torch.manual_seed(1)
    enc2, _ = build_vae(cfg)
    export_vae(enc2, dec, other, likelihood="logistic_mixture", image_shape=(28, 28), levels=256, config=cfg, mixture=2)
    shutil.copy(other / "encoder.onnx", out / "encoder-baseline.onnx")
    return out


def _run(capsys, argv):
    assert bench.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_structure(tiny_model, tmp_path, capsys):
    plots = tmp_path / "plots"
    want_plots = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        want_plots = False
    argv = ["--model", str(tiny_model), "--data", str(FIXTURE), "-n", "24", "--k-max", "1", "--k-n", "12",
            "--latency-n", "5", "--latency-repeats", "2", "--classical-n", "8", "--repeats", "1", "--device", "cpu", "--json"]
    res, table = _run(capsys, argv + (["--plots", str(plots)] if want_plots else []))
    for key in ("rate", "throughput", "latency", "k_sweep", "classical", "machine", "versions", "date", "model", "data"):
        assert key in res, key
    r = res["rate"]
    assert r["n_images"] == 24 and r["file_bpd"] > 0 and r["neg_elbo_bpd"] > 0 and r["quantised_code_length_bpd"] > 0
    o = r["overhead"]
    assert o["lanes"] >= 1 and o["lane_head_bits"] == 96 * o["lanes"] and o["initial_bits"] % 32 == 0
    # the split adds up to the file
    total = o["container_header_bpd"] + o["lane_head_bpd"] + o["initial_bits_bpd"] + o["content_bpd"]
    assert total == pytest.approx(r["file_bpd"])
    assert o["discretisation_loss_bpd"] == pytest.approx(o["content_bpd"] - r["neg_elbo_bpd"])
    t = res["throughput"]
    assert t["n_images"] == 24 and sum(c for c, _ in t["plan"]) == 24 and t["lanes"] == sum(sl for _, sl in t["plan"])
    for k in ("compress", "decompress"):
        assert t[k]["images_per_second"] > 0 and t[k]["MB_per_second"] > 0
    # PNG on the same images inside the same repeats, and the ratios from those medians
    assert t["png"]["codec"] == "PNG (optimize)" and len(t["png"]["seconds_all"]) == 1
    for k in ("compress", "decompress"):
        assert t["vs_png"][k] == pytest.approx(t[k]["images_per_second"] / t["png"]["images_per_second"])
    assert "PNG (optimize)" in table
    lat = res["latency"]
    for mode in ("single", "chained"):
        for k in ("compress", "decompress"):
            assert STATS <= set(lat[mode][k]) and lat[mode][k]["n"] == 5
            assert len(lat[mode][f"{k}_all"]) == 5 and lat[mode][f"{k}_all_passes"]["n"] == 10
    ks = res["k_sweep"]
    assert set(ks["encoders"]) == {"shipped", "baseline"} and ks["n_images"] == 12
    for rows in ks["encoders"].values():
        assert [row["k"] for row in rows] == [0, 1]
        assert all(row["bits_per_dim"] > 0 and row["compress_s_per_image"] > 0 for row in rows)
    c = res["classical"]
    names = {row["codec"] for row in c["rows"]}
    assert {"gzip -9", "bz2 -9", "lzma -9e"} <= names and c["n_images"] == 8 and c["bitsback"]["bits_per_dim"] > 0
    assert "rate (bits/dim)" in table and "K sweep" in table and "classical codecs" in table
    if want_plots:
        assert sorted(p.name for p in plots.iterdir()) == ["codecs_bpd.png", "latency_cdf.png", "rate_vs_k.png"]
        assert res["plots"]


def test_skip_sections_and_k0_without_baseline(tiny_model, tmp_path, capsys):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    (model / "encoder-baseline.onnx").unlink()
    res, _ = _run(capsys, ["--model", str(model), "--data", str(FIXTURE), "-n", "10", "--k-max", "0", "--k-n", "10",
                           "--skip", "latency,classical,throughput", "--device", "cpu", "--json"])
    assert "latency" not in res and "classical" not in res and "throughput" not in res
    assert res["rate"]["n_images"] == 10
    assert list(res["k_sweep"]["encoders"]) == ["shipped"] and "no baseline" in res["k_sweep"]["note"]


def test_k0_bench_does_not_import_torch(tiny_model):
    code = (
        "import sys, bitsback.bench as b;"
        f"b.run(model={str(tiny_model)!r}, data={str(FIXTURE)!r}, n=8, k_max=0, k_n=8, latency_n=3, classical_n=4,"
        " repeats=1, device='cpu');"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_preprocess_binarizes_only_8bit_data():
    class M:
        levels, dim, shape, manifest = 2, 4, (2, 2), {"preprocess": "binarize"}

    grey = np.array([[[0, 200], [100, 255]]], np.uint8)
    assert bench.preprocess(M, grey).tolist() == [[[0, 1], [0, 1]]]
    assert bench.preprocess(M, np.array([[[0, 1], [1, 0]]], np.uint8)).tolist() == [[[0, 1], [1, 0]]]


def test_unknown_skip_is_an_error(capsys):
    assert bench.main(["--skip", "nonsense"]) == 2
