"""Models by name: cards from entry points, downloads from a real HTTP server on 127.0.0.1 (Range, cut
connections, 404, refused, timeout), the cache and its lock, offline use, names in recipes and the CLI."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import UNTRAINED_POSTPROCESSOR, free_port, tiny_model_table
from test_registry import make_distribution, site  # noqa: F401  (the fixture)

from vista2d_core import RecipeError, UserError, describe, load_recipe, recipe_from_dict
from vista2d_core.cli import main
from vista2d_core.download import download
from vista2d_core.model import build_model, save_checkpoint
from vista2d_core.pretrained import cache_path, fetch, model_card
from vista2d_core.recipe import recipe_to_dict

ROOT = Path(__file__).resolve().parents[1]
CARDS = "vista2d.models"


class FileServer(ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes) with Range support; logs each request's (path, Range header).

    ``cut_after``: the next response sends only this many body bytes, then closes the connection.
    ``delay``: seconds to sleep after each MiB sent (a slow network).
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: int | None = None
        self.delay = 0.0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _Handler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        wanted = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((self.path, wanted))
            cut, srv.cut_after = srv.cut_after, None
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1]) if wanted else 0
        if start >= len(body) and wanted:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if wanted else 200)
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        data = body[start:] if cut is None else body[start : start + cut]
        for i in range(0, len(data), 1 << 20):
            self.wfile.write(data[i : i + (1 << 20)])
            time.sleep(srv.delay)
        if cut is not None:
            self.close_connection = True  # the client was promised more: a connection cut midway


@pytest.fixture
def server():
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> tuple[bytes, bytes]:
    """Two checkpoints of one small vit_t model: in the official layout (no settings, like the official
    model.pt) and as vista2d writes them (with the settings it was 'trained' with: a 32 px window)."""
    torch.manual_seed(0)
    recipe = recipe_from_dict({"mode": "infer", "device": "cpu", "model": tiny_model_table(resize_to=0),
                               "infer": {"roi_size": [32, 32], "postprocessor": UNTRAINED_POSTPROCESSOR}})
    folder = tmp_path_factory.mktemp("ckpt")
    net = build_model(recipe.model)
    plain = save_checkpoint(net, folder / "plain.pt")
    trained = save_checkpoint(net, folder / "trained.pt", config=recipe_to_dict(recipe), epoch=1)
    return plain.read_bytes(), trained.read_bytes()


@pytest.fixture
def tiny_checkpoint(tiny_files) -> bytes:
    return tiny_files[0]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# what goes with the official-layout file: its backbone, a window and an untrained model's postprocessor
TINY_RECIPE = {"model": tiny_model_table(resize_to=0),
               "infer": {"roi_size": [64, 64], "overlap": 0.5, "postprocessor": UNTRAINED_POSTPROCESSOR}}


def refused_url() -> str:
    """An http URL on 127.0.0.1 at a port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/tiny.pt"


@pytest.fixture
def cards(site, server, tiny_files, monkeypatch):  # noqa: F811
    """Cards of a tmp distribution 'v2dtest-cards': ``tiny`` (the official-layout file, checksum right, a
    recipe), ``tiny_trained`` (the file with settings), ``tiny_bad_sum``, ``tiny_missing`` (404),
    ``tiny_refused`` and ``tiny_sam`` (served where a test puts it); downloads allowed."""
    tiny_checkpoint, trained = tiny_files
    server.files["/tiny.pt"] = tiny_checkpoint
    server.files["/trained.pt"] = trained
    good = {"url": f"{server.url}/tiny.pt", "sha256": sha256(tiny_checkpoint), "description": "tiny test model",
            "licence": "CC0-test", "recipe": TINY_RECIPE}
    module = "".join(f"{name.upper()} = {card!r}\n" for name, card in {
        "tiny": good,
        "tiny_trained": {"url": f"{server.url}/trained.pt", "recipe": TINY_RECIPE},
        "tiny_bad_sum": {**good, "url": f"{server.url}/tiny.pt?again", "sha256": "0" * 64},
        "tiny_missing": {"url": f"{server.url}/missing.pt"},
        "tiny_refused": {"url": refused_url()},
        "tiny_sam": {"url": f"{server.url}/sam_vit_t.pth"},
    }.items())
    names = ("tiny", "tiny_trained", "tiny_bad_sum", "tiny_missing", "tiny_refused", "tiny_sam")
    make_distribution(site, "v2dtest-cards", {CARDS: {n: f"v2dtest_cards:{n.upper()}" for n in names}},
                      {"v2dtest_cards.py": module})
    server.files["/tiny.pt?again"] = tiny_checkpoint
    monkeypatch.delenv("VISTA2D_OFFLINE")
    return site


def gets(server: FileServer, path: str = "/tiny.pt") -> list[str | None]:
    """The Range header of each request for ``path`` (None: a request for the whole file)."""
    return [r for p, r in server.requests if p == path]


# downloads ------------------------------------------------------------------------------------------------
def test_download_then_cache_hit(cards, server, tiny_checkpoint):
    path = fetch("tiny")
    assert path == Path(os.environ["VISTA2D_HOME"]) / "models" / "tiny" / "tiny.pt" == cache_path("tiny")
    assert path.read_bytes() == tiny_checkpoint and gets(server) == [None]
    assert not path.with_name("tiny.pt.part").exists()
    assert fetch("tiny") == path and gets(server) == [None]  # from the cache: no second request


def test_a_cut_connection_is_resumed_with_range(cards, server, tiny_checkpoint):
    server.cut_after = 1_000_000
    path = fetch("tiny")
    assert gets(server) == [None, "bytes=1000000-"]  # the second request asks only for the rest
    assert path.read_bytes() == tiny_checkpoint and len(tiny_checkpoint) > 2_000_000


def test_a_part_left_by_an_earlier_run_is_resumed(cards, server, tiny_checkpoint):
    part = cache_path("tiny").with_name("tiny.pt.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(tiny_checkpoint[:123_456])
    assert fetch("tiny").read_bytes() == tiny_checkpoint
    assert gets(server) == ["bytes=123456-"] and not part.exists()


def test_checksum_mismatch_deletes_the_file_and_names_both_sums(cards, server, tiny_checkpoint):
    with pytest.raises(UserError) as info:
        fetch("tiny_bad_sum")
    message = str(info.value)
    assert f"expected sha256 {'0' * 64}, got {sha256(tiny_checkpoint)}" in message and "\n" not in message
    folder = cache_path("tiny_bad_sum").parent
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == []


def test_404_and_refused_name_the_url_and_where_to_put_the_file(cards, server):
    for name, reason in (("tiny_missing", "HTTP 404 Not Found"), ("tiny_refused", "refused")):
        with pytest.raises(UserError) as info:
            fetch(name)
        message = str(info.value)
        assert message.startswith(f"model '{name}': cannot download {model_card(name).url} (")
        assert reason in message and message.endswith(f"put the file there by hand: {cache_path(name)}")
        assert "\n" not in message and not cache_path(name).exists()


def test_a_silent_server_times_out(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x.pt"
        began = time.monotonic()
        with pytest.raises(UserError, match=rf"^cannot download {re.escape(url)} \(timed out\): put the file"):
            download(url, tmp_path / "x.pt", timeout=0.5)
        assert time.monotonic() - began < 5


def test_offline_never_touches_the_network(cards, server, monkeypatch, tiny_checkpoint):
    monkeypatch.setenv("VISTA2D_OFFLINE", "1")
    with pytest.raises(UserError, match=r"model 'tiny' is not in the cache and VISTA2D_OFFLINE is set: download "
                                        rf"{re.escape(server.url)}/tiny\.pt .* to {re.escape(str(cache_path('tiny')))}$"):
        fetch("tiny")
    assert server.requests == []
    monkeypatch.setenv("VISTA2D_OFFLINE", "0")
    fetch("tiny")
    monkeypatch.setenv("VISTA2D_OFFLINE", "1")
    assert fetch("tiny").read_bytes() == tiny_checkpoint and len(server.requests) == 1


@pytest.mark.slow
def test_two_processes_pulling_at_once_download_once(cards, server):
    server.delay = 0.15  # ~2 s for the file: the second process starts while the first downloads
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cards), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "vista2d_core", "models", "pull", "tiny"]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert {out.strip() for out, _ in results} == {str(cache_path("tiny"))}
    assert gets(server) == [None]  # one download
    errs = sorted(err for _, err in results)
    assert "downloading model 'tiny' (licence: CC0-test)" in errs[0]  # the licence, shown on first download
    assert "waiting for another process to download tiny.pt" in errs[1]  # they did overlap


# cards ----------------------------------------------------------------------------------------------------
def test_cards_are_validated_naming_package_and_key(site, monkeypatch):  # noqa: F811
    module = (
        "TYPO = {'url': 'https://example.org/m.pt', 'licens': 'MIT'}\n"
        "WRONG = {'url': 'https://example.org/m.pt', 'citation': 3}\n"
        "SHORT_SUM = {'url': 'ftp://example.org/m.pt', 'sha256': 'abc'}\n"
        "NO_URL = {'recipe': {'train': {}}}\n"
        "def made():\n    return {'url': 'https://example.org/m.pt', 'description': 'from a function'}\n"
    )
    names = {"typo": "TYPO", "wrong": "WRONG", "short_sum": "SHORT_SUM", "no_url": "NO_URL", "made": "made"}
    make_distribution(site, "v2dtest-badcards", {CARDS: {k: f"v2dtest_badcards:{v}" for k, v in names.items()}},
                      {"v2dtest_badcards.py": module})
    where = "in vista2d.models (v2dtest_badcards:{}, package v2dtest-badcards): "
    expected = {
        "typo": "licens: unknown option (known: url, sha256, description, licence, citation, recipe)",
        "wrong": "citation: expected a string, got 3",
        "short_sum": "url: must be an http(s) URL, got 'ftp://example.org/m.pt'",
        "no_url": "url: missing (required); recipe.train: unknown option (known: model, data, infer)",
    }
    for name, problems in expected.items():
        with pytest.raises(UserError) as info:
            model_card(name)
        assert str(info.value) == f"model card '{name}' " + where.format(names[name]) + problems
    assert model_card("made").description == "from a function"
    rows = {r.name: r for r in describe("models") if r.package == "v2dtest-badcards"}
    assert rows["made"].summary == "from a function" and "licens: unknown option" in rows["typo"].error


def test_builtin_cards_and_the_reference_recipe_by_name(monkeypatch, capsys):
    urls = {name: model_card(name).url for name in ("vista2d", "sam_vit_b", "sam_vit_l", "sam_vit_h")}
    assert urls == {
        "vista2d": "https://github.com/Project-MONAI/model-zoo/releases/download/model_zoo_bundle_data/vista2d_model.pt",
        "sam_vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "sam_vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "sam_vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    }
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["models"]) == 0  # listed with their package, not cached, and their URLs
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    for name, url in urls.items():
        assert rows[name][1:3] == ["vista2d", "no"] and rows[name][-1] == url
    # offline with an empty cache (conftest): the reference recipe says what is missing and where it goes
    with pytest.raises(RecipeError) as info:
        load_recipe(ROOT / "recipes/vista2d.toml")
    offline = (f"model 'vista2d' is not in the cache and VISTA2D_OFFLINE is set: download {urls['vista2d']} "
               f"(or run `vista2d models pull vista2d` where there is a network) to {cache_path('vista2d')}")
    assert info.value.problems == [f"model.checkpoint: {offline}"]
    cache_path("vista2d").parent.mkdir(parents=True)
    torch.save({"state_dict": {}}, cache_path("vista2d"))  # the official layout carries no settings
    recipe = recipe_from_dict({"mode": "infer", "model": {"checkpoint": "vista2d"}})
    assert recipe.model.checkpoint == cache_path("vista2d")
    backbone, post = recipe.model.backbone.options, recipe.infer.postprocessor.options
    assert (backbone.variant, backbone.resize_to) == ("vit_b", 1024)  # from the card: the reference setup
    assert (post.niter, post.cellprob_threshold, post.flow_threshold, post.min_size) == (200, 0.4, 0.4, 15)


# names in recipes -----------------------------------------------------------------------------------------
def test_a_name_in_a_recipe_brings_the_checkpoint_and_card_settings(cards, tmp_path):
    (tmp_path / "r.toml").write_text('mode = "infer"\n[model]\ncheckpoint = "tiny"\n[infer]\noverlap = 0.25\n')
    recipe = load_recipe(tmp_path / "r.toml")
    assert recipe.model.checkpoint == cache_path("tiny")
    assert (recipe.model.backbone.options.variant, recipe.model.backbone.options.resize_to) == ("vit_t", 0)
    assert tuple(recipe.infer.roi_size) == (64, 64)  # the card's: the file carries no settings
    assert recipe.infer.postprocessor.options.cellprob_threshold == -100.0  # the card's
    assert recipe.infer.overlap == 0.25  # the recipe's, over the card's 0.5
    trained = load_recipe(tmp_path / "r.toml", ["model.checkpoint=tiny_trained"])  # --set: a name too
    assert trained.model.checkpoint == cache_path("tiny_trained")
    assert tuple(trained.infer.roi_size) == (32, 32)  # the file's own settings, over its card's (64, 64)
    assert trained.infer.overlap == 0.25


def test_a_path_that_exists_is_a_path_and_a_missing_non_name_is_todays_error(cards, server, tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "tiny")
    recipe = recipe_from_dict({"mode": "infer", "model": {"checkpoint": "tiny"}}, tmp_path)
    assert recipe.model.checkpoint == tmp_path / "tiny" and server.requests == []
    for missing in ("nothere", "models/tiny", "tiny.pt"):
        with pytest.raises(RecipeError) as info:
            recipe_from_dict({"mode": "infer", "model": {"checkpoint": missing}}, tmp_path / "elsewhere")
        hint = '(train one with recipes/quickstart.toml, or name a pretrained model, such as "vista2d": docs/models.md)'
        assert info.value.problems == [f"model.checkpoint: no such file: {tmp_path / 'elsewhere' / missing} {hint}"]
    assert server.requests == []


def test_backbone_weights_by_name(cards, server, tmp_path):
    torch.manual_seed(1)
    encoder = build_model(recipe_from_dict({"mode": "infer", "model": tiny_model_table()}).model).model.image_encoder
    sam = {f"image_encoder.{k}": v for k, v in encoder.state_dict().items()}
    torch.save(sam, tmp_path / "sam.pth")
    server.files["/sam_vit_t.pth"] = (tmp_path / "sam.pth").read_bytes()
    model = recipe_from_dict({"mode": "infer", "model": tiny_model_table(weights="tiny_sam")}).model
    assert model.backbone.options.weights == cache_path("tiny_sam") == cache_path("tiny_sam").with_name("sam_vit_t.pth")
    loaded = build_model(model).model.image_encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in encoder.state_dict().items())
    with pytest.raises(RecipeError) as info:  # a failed download is reported at the field
        recipe_from_dict({"mode": "infer", "model": tiny_model_table(weights="tiny_missing")})
    [problem] = info.value.problems
    assert problem.startswith("model.backbone.weights: model 'tiny_missing': cannot download ") and "404" in problem


# the CLI --------------------------------------------------------------------------------------------------
def test_cli_models_table_pull_and_path(cards, server, capsys, monkeypatch, tiny_checkpoint):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["models", "path", "tiny"]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == str(cache_path("tiny")) and "vista2d models pull tiny" in err
    assert main(["models"]) == 0
    [row] = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("tiny ")]
    assert row[:3] == ["tiny", "v2dtest-cards", "no"] and row[-2:] == ["CC0-test", f"{server.url}/tiny.pt"]
    assert main(["models", "pull", "tiny", "tiny"]) == 0
    assert capsys.readouterr().out.split() == [str(cache_path("tiny"))] * 2 and gets(server) == [None]
    assert main(["models"]) == 0
    [row] = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("tiny ")]
    assert row[2:7] == ["yes", f"{len(tiny_checkpoint) / 1e6:.1f}", "MB", "tiny", "test"]
    assert main(["models", "pull", "tiny_missing"]) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if not line.startswith("downloading")] == [
        (f"error: model 'tiny_missing': cannot download {server.url}/missing.pt (HTTP 404 Not Found): "
        f"put the file there by hand: {cache_path('tiny_missing')}")
    ]  # one line, no traceback
    assert main(["models", "path", "tiny"]) == 0


@pytest.mark.slow
def test_a_card_from_a_pip_installed_package_segments_by_name(server, tiny_checkpoint, tmp_path, monkeypatch, rng):
    """A separately installed distribution publishes a card; `vista2d segment -c NAME` downloads and uses it."""
    pytest.importorskip("setuptools")
    server.files["/labcells.pt"] = tiny_checkpoint
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "v2dtest-labcards"\nversion = "0.1.0"\n'
        '[project.entry-points."vista2d.models"]\nlabcells = "v2dtest_labcards:card"\n'
        '[tool.setuptools]\npy-modules = ["v2dtest_labcards"]\n'
    )
    card = {"url": f"{server.url}/labcells.pt", "sha256": sha256(tiny_checkpoint), "licence": "CC0-lab",
            "description": "lab cells", "recipe": TINY_RECIPE}
    (src / "v2dtest_labcards.py").write_text(f"def card():\n    return {card!r}\n")
    target = tmp_path / "target"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True)
    tifffile.imwrite(tmp_path / "cells.tif", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    monkeypatch.delenv("VISTA2D_OFFLINE")
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "2",
           "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}

    def vista2d(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "vista2d_core", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, check=False, timeout=300)

    result = vista2d("segment", "cells.tif", "-c", "labcells", "-o", "seg", "--set", 'device="cpu"')
    assert result.returncode == 0, result.stderr
    assert "downloading model 'labcells' (licence: CC0-lab)" in result.stderr
    labels = tifffile.imread(tmp_path / "seg" / "cells_masks.tif")
    assert labels.shape == (64, 64) and labels.max() > 0
    used = (tmp_path / "seg" / "resolved_recipe.toml").read_text()
    assert str(Path(os.environ["VISTA2D_HOME"]) / "models/labcells/labcells.pt") in used
    assert "cellprob_threshold = -100.0" in used  # the card's recipe applied
    listing = vista2d("models")
    [row] = [line.split() for line in listing.stdout.splitlines() if line.startswith("labcells ")]
    assert row[:3] == ["labcells", "v2dtest-labcards", "yes"]
