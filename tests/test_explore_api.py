"""The latent explorer's JSON API (``twinvae/explore``) through Starlette's TestClient, for an image VAE
and a sentence VAE, each explored in both frameworks: the answers equal ``twinvae.Model``'s own
computations, bad input is a 4xx ``{"error": one line}`` after which the server keeps serving, and the
run folder is never written. Tiny models trained for a few dozen steps on tiny data."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from starlette.testclient import TestClient

import twinvae
from tests.test_mnist_data import make_mnist_dir
from tests.test_text_cli import write_corpus
from twinvae.explore import fields
from twinvae.explore.app import build_app
from twinvae.explore.explorer import Explorer, kl_per_dim, slerp_path
from twinvae.explore.sides import image_bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BACKENDS = ("torch", "jax")
IMAGE_RUN = {"task": "mnist", "hidden_sizes": [32], "latent_dim": 4, "batch_size": 100, "max_steps": 16,
             "log_every": 8}
TEXT_RUN = {"task": "text", "embed_dim": 16, "hidden_dim": 16, "latent_dim": 4, "batch_size": 16, "max_steps": 20,
            "log_every": 10}
N_TEST = 60


def snapshot(folder) -> dict[str, str]:
    """Every file under ``folder`` and a hash of its bytes: a write anywhere changes it."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("mnist")
    make_mnist_dir(data, n_train=5200, n_test=N_TEST)
    return twinvae.train(backend="torch", **IMAGE_RUN, data=str(data), workdir=str(tmp_path_factory.mktemp("i") / "r")
                         ).workdir


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    corpus = write_corpus(tmp_path_factory.mktemp("corpus"))
    return twinvae.train(backend="jax", **TEXT_RUN, data=str(corpus), workdir=str(tmp_path_factory.mktemp("t") / "r")
                         ).workdir


def _explore(run, backend):
    before = snapshot(run)
    model = twinvae.load(run, backend=backend)
    explorer = Explorer(model, folder=run)
    explorer.warm()
    return model, explorer, TestClient(build_app(explorer)), (run, before)


@pytest.fixture(scope="module", params=BACKENDS)
def image(request, image_run):
    return _explore(image_run, request.param)


@pytest.fixture(scope="module", params=BACKENDS)
def text(request, text_run):
    return _explore(text_run, request.param)


def post(client, path, body, status=200):
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


# ------------------------------------------------------------------------------ images
def test_image_info_map_and_kl(image):
    model, explorer, client, _ = image
    info = client.get("/api/info").json()
    assert (info["task"], info["backend"], info["latent_dim"], info["test_examples"]) == (
        "mnist", model.backend, 4, N_TEST)
    mean, logvar = model.encode(explorer.test.examples)
    np.testing.assert_allclose(info["kl_per_dim"], kl_per_dim(mean, logvar).mean(0), rtol=1e-5, atol=1e-6)
    assert info["active_units"] == int(np.sum(mean.astype(np.float64).var(0) > 0.01))
    m = client.get("/api/map").json()
    assert len(m["x"]) == len(m["labels"]) == N_TEST and m["labels"] == explorer.test.labels.tolist()
    # a point of the map is origin + x * axes[0] + y * axes[1]: the means project back onto the plane
    xy = (mean - np.array(m["origin"])) @ np.array(m["axes"]).T
    np.testing.assert_allclose(np.stack([m["x"], m["y"]], 1), xy, atol=2e-4)
    assert 0 < m["explained"][1] <= m["explained"][0] <= 1
    dims = client.get("/api/map", params={"dims": "2,0"}).json()
    np.testing.assert_allclose(dims["x"], mean[:, 2], atol=1e-4)
    np.testing.assert_allclose(dims["y"], mean[:, 0], atol=1e-4)


def test_image_encode_decode_sample_are_the_models(image):
    model, explorer, client, _ = image
    x = explorer.test.examples[:3]
    mean = model.encode(x)[0]
    got = post(client, "/api/encode", {"input": 2})
    np.testing.assert_allclose(got["mean"], mean[2], rtol=1e-6, atol=1e-6)
    assert got["input"]["label"] == int(explorer.test.labels[2])
    assert got["reconstruction"]["images"] == image_bytes(model.decode(mean[2:3]))
    z = [[0.5, -1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [1, 1, 1, 1]]
    assert post(client, "/api/decode", {"z": z})["images"] == image_bytes(model.decode(np.array(z, np.float32)))
    one = post(client, "/api/decode", {"z": z[0]})
    assert one["images"] == image_bytes(model.decode(np.array(z[:1], np.float32))) and one["height"] == 28
    s = post(client, "/api/sample", {"n": 5, "temperature": 0.7, "seed": 3})
    assert s["images"] == image_bytes(model.sample(5, temperature=0.7, seed=3))
    assert s["images"] != post(client, "/api/sample", {"n": 5, "temperature": 0.7, "seed": 4})["images"]
    ex = post(client, "/api/example", {"index": 1})
    assert ex["image"] == image_bytes(x[1:2])[0]


def test_image_interpolation_traversal_nearest(image):
    model, explorer, client, _ = image
    a, b = explorer.means[0].astype(np.float64), explorer.means[5].astype(np.float64)
    lin = post(client, "/api/interpolate", {"a": 0, "b": 5, "steps": 6})
    np.testing.assert_allclose(lin["z"], np.linspace(0, 1, 6)[:, None] * (b - a) + a, atol=1e-9)
    assert len(lin["images"]) == 6
    sph = post(client, "/api/interpolate", {"a": 0, "b": 5, "steps": 6, "mode": "spherical"})
    path = np.array(sph["z"])
    np.testing.assert_allclose(path[[0, -1]], [a, b], atol=1e-9)
    # norms go linearly from |a| to |b| and directions turn by even angles
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linspace(np.linalg.norm(a), np.linalg.norm(b), 6),
                               rtol=1e-6)
    cos = path @ a / (np.linalg.norm(path, axis=1) * np.linalg.norm(a))
    np.testing.assert_allclose(np.arccos(np.clip(cos, -1, 1)), np.linspace(0, 1, 6) * np.arccos(np.clip(cos[-1], -1, 1)),
                               atol=1e-6)
    assert sph["images"] == image_bytes(model.decode(path.astype(np.float32)))
    grid = post(client, "/api/traverse", {"dims": [1, 3], "steps": 5, "span": 2.0, "base": 4})
    assert (grid["rows"], grid["cols"], len(grid["images"]), grid["values"]) == (2, 5, 10, [-2, -1, 0, 1, 2])
    z = np.repeat(explorer.means[4][None].astype(np.float64), 10, 0)
    z[:5, 1], z[5:, 3] = grid["values"], grid["values"]
    assert grid["images"] == image_bytes(model.decode(z.astype(np.float32)))
    near = post(client, "/api/nearest", {"input": 7, "k": 3})
    assert near["indices"][0] == 7 and near["distances"][0] == 0.0 and len(near["examples"]) == 3
    d = np.linalg.norm(explorer.means - explorer.means[7], axis=1)
    assert near["indices"] == np.argsort(d, kind="stable")[:3].tolist()


def test_slerp_of_collinear_or_zero_ends_is_the_line():
    a = np.array([1.0, 2.0])
    np.testing.assert_allclose(slerp_path(a, 3 * a, 3), [a, 2 * a, 3 * a])
    np.testing.assert_allclose(slerp_path(np.zeros(2), a, 3), [0 * a, a / 2, a])
    quarter = slerp_path(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 3)[1]
    np.testing.assert_allclose(quarter, [np.sqrt(0.5), np.sqrt(0.5)])


# ------------------------------------------------------------------------------ sentences
def test_text_reconstruction_homotopy_samples_are_the_models(text):
    model, explorer, client, _ = text
    s = explorer.test.examples[3]
    got = post(client, "/api/encode", {"input": "  " + s + " zzzunknownword "})
    assert got["input"]["read"] == s.split() + ["<unk>"] and not got["input"]["truncated"]
    mean, logvar = model.encode([s + " zzzunknownword"])
    np.testing.assert_allclose(got["mean"], mean[0], rtol=1e-5, atol=1e-6)
    assert got["kl"] == pytest.approx(float(kl_per_dim(mean, logvar).sum()), rel=1e-5)
    assert got["reconstruction"]["sentences"] == model.decode(mean)
    beam = post(client, "/api/encode", {"input": 3, "method": "beam", "beam_width": 3})
    assert beam["input"]["sentence"] == s
    assert beam["reconstruction"]["sentences"] == model.reconstruct([s], method="beam", beam_width=3)
    a, b = explorer.test.examples[0], explorer.test.examples[1]
    homotopy = post(client, "/api/interpolate", {"a": a, "b": 1, "steps": 5})
    assert homotopy["sentences"] == model.interpolate(a, b, 5)
    samples = post(client, "/api/sample", {"n": 4, "temperature": 0.8, "seed": 2})
    assert samples["sentences"] == model.sample(4, temperature=0.8, seed=2)
    greedy = post(client, "/api/sample", {"n": 2, "method": "greedy"})
    assert greedy["sentences"] == model.sample(2, method="greedy")
    assert post(client, "/api/example", {"index": 5})["sentence"] == explorer.test.examples[5]
    near = post(client, "/api/nearest", {"z": got["mean"], "k": 4})
    d = np.linalg.norm(explorer.means - mean[0], axis=1)
    assert near["examples"] == [explorer.test.examples[i] for i in np.argsort(d, kind="stable")[:4]]


def test_text_map_and_info(text):
    model, explorer, client, _ = text
    info = client.get("/api/info").json()
    assert info["outputs"] == "sentences" and info["labels"] is False and info["test_examples"] == 40
    m = client.get("/api/map").json()
    assert m["labels"] is None and len(m["x"]) == 40
    mean = model.encode(explorer.test.examples)[0]
    np.testing.assert_allclose(explorer.means, mean, atol=1e-5)  # sorted by length to encode, then put back


# ------------------------------------------------------------------------------ bad input
BAD_TEXT = [
    ("/api/encode", {"input": "   "}, 400, "'input' is empty"),
    ("/api/encode", {"input": "word " * 61}, 400, "too long"),
    ("/api/encode", {"input": "x" * 401}, 400, "too long"),
    ("/api/encode", {"input": 40}, 400, "test index from 0 to 39"),
    ("/api/encode", {"input": 1, "method": "nucleus"}, 400, "'method' must be one of greedy, beam, sample"),
    ("/api/encode", {"input": 1, "method": "beam", "beam_width": 99}, 400, "'beam_width' must be from 1 to 8"),
    ("/api/encode", {}, 400, "'input' is required"),
    ("/api/sample", {"n": 10_000}, 400, "'n' must be from 1 to 32"),
    ("/api/sample", {"temperature": 0}, 400, "'temperature' must be in (0, 5]"),
    ("/api/sample", {"method": "beam", "temperature": 0.5}, 400, "'temperature' applies to method 'sample'"),
    ("/api/interpolate", {"a": "a b", "b": "c", "steps": 1000}, 400, "'steps' must be from 2 to 16"),
    ("/api/interpolate", {"a": "a b"}, 400, "'b' is required"),
    ("/api/traverse", {"dims": [4]}, 400, "dimension 4 is out of range"),
    ("/api/traverse", {"dims": [0, 1, 2, 3], "steps": 16}, 400, "at most 32"),
    ("/api/decode", {"z": [1, 2, 3]}, 400, "codes of 4 finite numbers"),
    ("/api/decode", {"z": [[0, 0, 0, 0]] * 65}, 400, "at most 64 per request"),
    ("/api/nearest", {"z": [0, 0, 0, 0], "k": 0}, 400, "'k' must be from 1 to 20"),
    ("/api/example", {"index": -1}, 400, "test index from 0 to 39"),
    ("/api/example", {"index": True}, 400, "test index"),
]


@pytest.mark.parametrize("path, body, status, message", BAD_TEXT)
def test_bad_text_requests_answer_4xx_and_the_server_keeps_serving(text, path, body, status, message):
    _, _, client, _ = text
    got = post(client, path, body, status)
    assert set(got) == {"error"} and message in got["error"] and "\n" not in got["error"]
    assert client.get("/api/info").status_code == 200


def test_bad_requests_of_any_kind(image):
    _, _, client, _ = image
    cases = [
        (client.post("/api/encode", content=b"{not json", headers={"content-type": "application/json"}), 400,
         "not valid JSON"),
        (client.post("/api/encode", content=b"[1, 2]"), 400, "must be a JSON object"),
        (client.post("/api/decode", content=b"{\"z\": [" + b"0," * 9000 + b"0]}"), 413, "over 16384 bytes"),
        (client.post("/api/encode", json={"input": "a sentence"}), 400, "an image VAE takes no sentences"),
        (client.post("/api/sample", json={"n": 129}), 400, "'n' must be from 1 to 128"),
        (client.post("/api/sample", json={"seed": "7"}), 400, "'seed' must be an integer"),
        (client.post("/api/sample", content=b'{"temperature": NaN}'), 400, "'temperature' must be a number"),
        (client.post("/api/decode", content=b'{"z": [0, 0, 0, Infinity]}'), 400, "finite numbers"),
        (client.get("/api/map", params={"dims": "0,9"}), 400, "dimension 9 is out of range"),
        (client.get("/api/map", params={"dims": "0"}), 400, "must hold 2 distinct dimensions"),
        (client.get("/api/map", params={"dims": "a,b"}), 400, "'dims' must be two dimensions"),
        (client.post("/api/decode", json={"z": [0, 0, 0, 1e9]}), 400, "within +-100"),
        (client.get("/api/sample"), 405, "GET is not allowed on /api/sample"),
        (client.get("/etc/passwd"), 404, "no such page"),
        (client.get("/static/../explorer.py"), 404, "no such page"),
    ]
    for response, status, message in cases:
        assert response.status_code == status and message in response.json()["error"], response.text
    assert client.get("/api/info").status_code == 200


def test_the_run_folder_is_never_written(image, text):
    for _, _, client, (run, before) in (image, text):
        for path, body in (("/api/sample", {"n": 2}), ("/api/encode", {"input": 0}), ("/api/nearest", {"input": 1}),
                           ("/api/interpolate", {"a": 0, "b": 1}), ("/api/traverse", {"dims": [0]})):
            assert client.post(path, json=body).status_code == 200
        assert client.get("/api/map").status_code == 200
        assert snapshot(run) == before and "config.json" in before


# ------------------------------------------------------------------------------ the page
def test_the_page_is_served_offline_with_a_strict_policy(image):
    _, _, client, _ = image
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    for path in ("/", "/explore.js", "/explore.css"):
        text = client.get(path).text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path
    assert client.get("/explore.js").headers["content-type"].startswith("text/javascript")


def test_limits_are_reported(image):
    _, _, client, _ = image
    limits = client.get("/api/info").json()["limits"]
    assert limits["max_body_bytes"] == fields.MAX_BODY_BYTES and limits["max_sentence_words"] == 60
    assert json.dumps(limits)


# ------------------------------------------------------------------------------ the command
def test_command_refuses_bad_input_in_one_line(image_run, tmp_path, capsys):
    import explore
    from twinvae.explore import server

    taken = server.bind("127.0.0.1", 0)
    port = str(taken.getsockname()[1])
    before = snapshot(image_run)
    cases = [(["--workdir", str(tmp_path / "missing"), "--port", "0"], "no such folder"),
             (["--workdir", str(image_run), "--port", port], f"cannot listen on 127.0.0.1:{port}"),
             (["--workdir", str(image_run), "--limit", "0"], "--limit must be >= 1"),
             (["--workdir", str(image_run), "--threads", "0"], "--threads must be >= 1"),
             (["--workdir", str(image_run), "--port", "0", "--data", str(tmp_path)], "the test split:")]
    try:
        for argv, message in cases:
            assert explore.main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith("twinvae-explore: error: ") and message in err and err.count("\n") == 1, err
    finally:
        taken.close()
    assert snapshot(image_run) == before
    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1") and not server.is_loopback("0.0.0.0")


def test_the_wheel_ships_the_page_and_the_command(tmp_path):
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path)], capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = zipfile.ZipFile(next(tmp_path.glob("twinvae-*.whl")))
    names = set(wheel.namelist())
    for name in ("index.html", "explore.js", "explore.css"):
        assert f"twinvae/explore/static/{name}" in names
        assert wheel.read(f"twinvae/explore/static/{name}") == (root / "twinvae/explore/static" / name).read_bytes()
    assert "explore.py" not in {n.split("/")[0] for n in names}
    entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "twinvae-explore = twinvae.explore.cli:main" in entry_points
