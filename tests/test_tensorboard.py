"""A real `tensorboard` server on 127.0.0.1 serves a finished search's programs and scalars over its HTTP API."""

import html
import json
import pathlib
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from discover.infra.rundir import new_run_dir
from discover.searches import update_rules as search

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = ROOT / "experiments" / "search_tiny.yaml"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb_search")
    config = search.load_search_config(TINY, [f"fitness.reference_cache={root / 'baselines.json'}",
                                              "evolution.generations=2", "refine.top_k=0"])
    run_dir = new_run_dir(config, root)
    summary = search.run_search(config, run_dir)
    return run_dir, summary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, path: str, **query):
    url = f"{base}{path}?{urllib.parse.urlencode(query)}" if query else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


@pytest.fixture(scope="module")
def server(finished_run):
    run_dir, _ = finished_run
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(run_dir.tb_dir), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast=false", "--reload_interval=0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    try:
        while True:  # the server is up once the text plugin lists our tags (loading is asynchronous)
            if proc.poll() is not None:
                pytest.fail(f"tensorboard exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
            try:
                tags = _get(base, "/data/plugin/text/tags")
                if any("hall_of_fame" in t for ts in tags.values() for t in ts):
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.time() > deadline:
                pytest.fail("tensorboard did not serve the run within 90 s")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _plain(rendered: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", rendered))


def test_programs_are_served_as_python_code(server, finished_run):
    _, summary = finished_run
    tags = _get(server, "/data/plugin/text/tags")
    run = next(iter(tags))
    served = {t.removesuffix("/text_summary") for t in tags[run]}  # tensorboardX's text tag suffix
    assert {"programs/top", "programs/best", "hall_of_fame", "config"} <= served
    hall = _get(server, "/data/plugin/text/text", run=run, tag="hall_of_fame/text_summary")
    rendered = hall[-1]["text"]
    assert "<code" in rendered  # the program is a code block
    text = _plain(rendered)
    for line in summary["best_program"].splitlines()[1:]:  # the body of the best program, statement by statement
        assert line.strip() in text
    assert "meta-validation" in text
    top = _plain(_get(server, "/data/plugin/text/text", run=run, tag="programs/top/text_summary")[-1]["text"])
    assert "def " in top and "fitness" in top


def test_scalars_are_served(server, finished_run):
    _, summary = finished_run
    run = next(iter(_get(server, "/data/plugin/scalars/tags")))
    points = _get(server, "/data/plugin/scalars/scalars", run=run, tag="fitness/best")
    assert [p[1] for p in points] == [1, 2]
    assert all(0.0 < p[2] < 2.0 for p in points)
    hits = _get(server, "/data/plugin/scalars/scalars", run=run, tag="cache/hit_rate_total")
    assert hits[-1][2] == pytest.approx(summary["cache_hit_rate"], rel=1e-6)
