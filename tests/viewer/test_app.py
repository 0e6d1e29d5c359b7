"""The viewer app: a live (browserless) viewer of a tiny trained run whose text selection equals
that of ``openins query``, click selection, stage-0 runs, errors and serving."""

from __future__ import annotations

import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from openinsgaussian.errors import BackendError, ConfigError, DataError, RunError
import openinsgaussian as oig
from openinsgaussian.run.instances import load_instances, save_instances
from openinsgaussian.viewer import ViewerConfig, build_viewer, load_viewer_run, serve
from openinsgaussian.viewer.app import check_listen_address


@pytest.fixture(scope="module")
def finished(finished_tiny_run) -> Path:
    return finished_tiny_run  # tests/conftest.py


@pytest.fixture
def viser_installed():
    return pytest.importorskip("viser")


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def test_viewer_query_selects_what_openins_query_selects(finished, tmp_path, viser_installed):
    viewer = build_viewer(finished, ViewerConfig(port=0, max_gaussians=3000))
    try:
        assert viewer.port > 0 and _serving(viewer.url)
        gui = viewer.gui
        assert gui.query_text is not None and gui.query_button is not None
        assert gui.clear is not None and gui.status is not None
        assert viewer.color_modes == ["rgb", "instance", "coarse"]
        assert gui.color_mode.value == "instance"
        assert len(viewer.frustums) == len(viewer.data.scene.train_frames)
        assert viewer.splats is not None and len(viewer.keep) == 3000
        assert viewer.splats.buffer.shape[0] == 3000  # [M, 8] packed splats as sent
        leaf_ind = viewer.data.instances.leaf_ind
        texts = ["bed", "wall"]
        ref = oig.open_run(finished).query_all(texts)
        for text, row in zip(texts, ref, strict=True):
            gui.query_text.value = text
            sel = viewer.submit_query()  # what the button does
            assert sel is not None and sel.best_leaf == row.best_leaf is not None
            assert sel.score == pytest.approx(row.score, abs=1e-6)
            np.testing.assert_array_equal(sel.mask, np.isin(leaf_ind, row.leaves))
            assert sel.n_gaussians == row.n_gaussians > 0
            np.testing.assert_array_equal(np.flatnonzero(sel.mask), row.gaussian_ids)
            np.testing.assert_array_equal(viewer.selection, sel.mask)
            assert f"best leaf {row.best_leaf}" in gui.status.content
        # the unselected are dimmed in what is sent to the browser
        shown = viewer.selection[viewer.keep]
        sent_alpha = viewer.splats.opacities[:, 0].astype(np.float64) / 255.0
        full_alpha = viewer.data.opacities[viewer.keep]
        assert np.all(sent_alpha[~shown] <= full_alpha[~shown] * 0.25 + 1 / 255)
        gui.others.value = "hide"
        viewer.refresh()
        assert (viewer.splats.opacities[~shown] == 0).all()
        # errors go to the panel, not to the server's thread
        gui.query_text.value = "   "
        assert viewer.submit_query() is None and "query failed" in gui.status.content
        viewer.clear()
        assert viewer.selection is None and viewer.last_query is None
        gui.color_mode.value = "RGB"
        viewer.refresh()
        viewer.set_cameras_visible(False)
        assert not any(h.visible for h in viewer.frustums)
    finally:
        viewer.stop()
    assert not _serving(viewer.url)
    viewer.stop()  # idempotent


def test_viewer_filtered_query_equals_run_query(finished, tmp_path, viser_installed):
    """With the LeRF clean-up on, the viewer still selects exactly what openins query does."""
    from openinsgaussian.query.run import QueryEngine
    from openinsgaussian.train.finished import load_run

    loaded = load_run(finished)
    cfg = replace(loaded.config.query, filter=True, min_count=10)
    with build_viewer(finished, ViewerConfig(port=0), query=cfg) as viewer:
        ref = QueryEngine(loaded, cfg).select(["bed"])[0]
        sel = viewer.query("bed")
        unfiltered = np.isin(viewer.data.instances.leaf_ind, ref.leaves)
        assert sel.n_gaussians == ref.n_gaussians > 0
        np.testing.assert_array_equal(np.flatnonzero(sel.mask), ref.gaussian_ids)
        assert sel.n_gaussians < unfiltered.sum() and not (sel.mask & ~unfiltered).any()


def test_absent_objects_are_not_found_in_the_panel(finished, tmp_path, viser_installed):
    """Oracle run: a phrase outside the room's classes selects nothing, as openins query."""
    with build_viewer(finished, ViewerConfig(port=0)) as viewer:
        wall = viewer.query("wall")  # oracle: the class vector itself, relevancy ~1
        assert wall.found and wall.relevancy > 0.99 and wall.n_gaussians > 0
        assert "relevancy" in viewer.gui.status.content
        mug = viewer.query("red mug")
        ref = oig.open_run(finished).query("red mug")
        assert not mug.found and not ref.found and mug.n_gaussians == 0 == ref.n_gaussians
        assert mug.best_leaf == ref.best_leaf is not None and mug.reason == ref.reason
        assert "not found" in viewer.gui.status.content
        assert viewer.selection is not None and not viewer.selection.any()


def test_viewer_queries_use_the_prompt_template(clip_run, monkeypatch, viser_installed):
    """CLIP run: "chair" finds the leaf holding "a photo of a chair." (the shared template);
    with the bare template the other leaf."""
    monkeypatch.setenv("OIG_CLIP_CHECKPOINT", str(clip_run["checkpoint"]))
    with build_viewer(clip_run["run"], ViewerConfig(port=0, device="cpu")) as viewer:
        assert viewer.query("chair").best_leaf == clip_run["a"]
    cfg = ViewerConfig(port=0, device="cpu", prompt_template="{}")
    with build_viewer(clip_run["run"], cfg) as viewer:
        assert viewer.query("chair").best_leaf == clip_run["b"]


def test_click_selects_the_whole_leaf_and_names_the_best_recent_query(finished, viser_installed):
    with build_viewer(finished, ViewerConfig(port=0)) as viewer:
        bed, wall = viewer.query("bed"), viewer.query("wall")
        leaf_ind = viewer.data.instances.leaf_ind
        cam = viewer.data.scene.train_frames[0].camera.center.numpy()
        target = viewer.data.means[np.flatnonzero(bed.mask)[0]]
        info = viewer.pick(tuple(cam), tuple(target - cam))
        assert info is not None and info.leaf == int(leaf_ind[info.gaussian])
        np.testing.assert_array_equal(info.mask, leaf_ind == info.leaf)
        np.testing.assert_array_equal(viewer.selection, info.mask)
        assert f"leaf {info.leaf}" in viewer.gui.status.content
        assert info.best_query in ("bed", "wall")
        # the leaf that answers a query is matched back to that query
        assert viewer.selector.best_recent_query(bed.best_leaf)[0] == "bed"
        assert viewer.selector.best_recent_query(wall.best_leaf)[0] == "wall"
        # a click into the void selects nothing and says so
        before = viewer.selection
        assert viewer.pick(tuple(cam), tuple(cam - target)) is None
        assert "no Gaussian" in viewer.gui.status.content and viewer.selection is before


def test_stage0_run_is_shown_without_the_query_box(finished, tmp_path, viser_installed):
    run = tmp_path / "stage0"
    shutil.copytree(finished, run)
    (run / "instances.npz").unlink()
    with build_viewer(run, ViewerConfig(port=0)) as viewer:
        assert viewer.data.instances is None and viewer.selector is None
        assert viewer.color_modes == ["rgb"] and viewer.gui.color_mode.value == "RGB"
        assert viewer.gui.query_text is None and viewer.gui.query_button is None
        assert "instances.npz" in viewer.selector_problem
        assert viewer.submit_query() is None and "instances.npz" in viewer.gui.status.content
        with pytest.raises(ConfigError, match="instances.npz"):
            viewer.query("bed")
        sent = viewer.splats.rgbs.astype(np.float64)  # [M, 3] uint8 as sent
        np.testing.assert_allclose(sent, viewer.data.rgb[viewer.keep] * 255, atol=1.0)


def test_missing_or_broken_runs_raise_errors_naming_the_path(finished, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(RunError, match=str(missing)):
        load_viewer_run(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunError, match="config.yml"):
        load_viewer_run(empty)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(finished / "config.yml", bare / "config.yml")
    with pytest.raises(RunError, match=f"{bare}.*no Gaussians"):
        load_viewer_run(bare)
    # Gaussians from point_cloud.ply when the checkpoints are gone
    shutil.copy(finished / "point_cloud.ply", bare / "point_cloud.ply")
    vr = load_viewer_run(bare)
    assert vr.model_source == "point_cloud.ply" and vr.num_gaussians > 0 and vr.instances is None
    # instances that do not match the Gaussians
    stale = tmp_path / "stale"
    shutil.copytree(finished, stale)
    inst = load_instances(stale / "instances.npz")
    inst.leaf_ind, inst.coarse_ind = inst.leaf_ind[:-1], inst.coarse_ind[:-1]
    save_instances(stale / "instances.npz", inst)
    with pytest.raises(DataError, match="instances.npz.*re-run stage 3"):
        load_viewer_run(stale)


def test_without_viser_the_viewer_names_the_extra(finished, monkeypatch):
    monkeypatch.setitem(sys.modules, "viser", None)
    with pytest.raises(BackendError, match=r"\[viewer\]"):
        build_viewer(finished, ViewerConfig(port=0))


def test_bad_settings_are_refused_before_serving(finished):
    with pytest.raises(ConfigError, match="pick_tolerance"):
        build_viewer(finished, ViewerConfig(port=0, pick_tolerance=0.0))
    with pytest.raises(ConfigError, match="port"):
        build_viewer(finished, ViewerConfig(port=70000))
    check_listen_address("127.0.0.1", 0)
    with pytest.raises(ConfigError, match="cannot listen"):
        check_listen_address("203.0.113.7", 0)  # TEST-NET-3: never this machine's address


def test_serve_prints_the_address_and_returns_when_stopped(finished, capsys, viser_installed):
    stop = threading.Event()
    stop.set()
    serve(finished, ViewerConfig(port=0), stop=stop)
    out = capsys.readouterr().out
    n = load_viewer_run(finished).num_gaussians
    assert "viewer running at http://127.0.0.1:" in out and f"{n:,} Gaussians" in out


def _wait_for(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)
    return bool(cond())


def test_a_websocket_client_gets_the_splats_and_drives_query_and_click(finished, viser_installed):
    """Speaks viser's wire protocol as the browser does (written against viser 1.1): the client
    receives the splats, frustums and panel; typing + pressing ``query`` and clicking the scene
    reach the viewer's callbacks."""
    if not viser_installed.__version__.startswith("1.1."):
        pytest.skip(f"speaks viser 1.1's wire protocol; viser {viser_installed.__version__} here")
    sync_client = pytest.importorskip("websockets.sync.client")
    msgspec = pytest.importorskip("msgspec")
    zstandard = pytest.importorskip("zstandard")
    from viser import _messages as vm

    def send(ws, msg) -> None:
        ws.send(msgspec.msgpack.encode(msg.as_serializable_dict()))

    def received(ws) -> set[str]:
        """Types of the messages that arrive until the server is quiet for 0.3 s."""
        types: set[str] = set()
        while True:
            try:
                raw = ws.recv(timeout=0.3)
            except TimeoutError:
                return types
            size, packed = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")
            inner = zstandard.ZstdDecompressor().decompress(
                raw[16 : 16 + packed], max_output_size=size
            )
            types |= {m["type"] for m in msgspec.msgpack.decode(inner)["messages"]}

    with build_viewer(finished, ViewerConfig(port=0)) as viewer:
        url = f"ws://127.0.0.1:{viewer.port}"
        proto = [f"viser-v{viser_installed.__version__}"]
        with sync_client.connect(url, subprotocols=proto, open_timeout=5, close_timeout=2) as ws:
            eye = tuple(float(x) for x in viewer.data.scene.train_frames[0].camera.center)
            send(
                ws,
                vm.ViewerCameraMessage(
                    wxyz=(1.0, 0.0, 0.0, 0.0),
                    position=eye,
                    fov=1.0,
                    near=0.01,
                    far=100.0,
                    image_height=480,
                    image_width=640,
                    look_at=(0.0, 0.0, 0.0),
                    up_direction=(0.0, 0.0, 1.0),
                ),
            )  # a browser announces its camera first
            first = received(ws)
            for kind in (
                "GaussianSplatsMessage",
                "CameraFrustumMessage",
                "GuiTextMessage",
                "GuiButtonMessage",
                "GuiDropdownMessage",
                "ScenePointerEnableMessage",
            ):
                assert kind in first, kind
            send(
                ws,
                vm.GuiUpdateMessage(
                    uuid=viewer.gui.query_text._impl.uuid, updates={"value": "bed"}
                ),
            )
            send(
                ws,
                vm.GuiUpdateMessage(
                    uuid=viewer.gui.query_button._impl.uuid, updates={"value": True}
                ),
            )
            assert _wait_for(lambda: viewer.last_query is not None)
            assert viewer.last_query.text == "bed" and viewer.last_query.n_gaussians > 0
            assert "GaussianSplatsMessage" in received(ws)  # the highlighted splats
            target = viewer.data.means[np.flatnonzero(viewer.last_query.mask)[0]]
            ray = target - np.array(eye)
            send(
                ws,
                vm.ScenePointerMessage(
                    event_type="click",
                    ray_origin=eye,
                    ray_direction=tuple(float(x) for x in ray / np.linalg.norm(ray)),
                    screen_pos=((0.5, 0.5),),
                    modifier=None,
                ),
            )
            assert _wait_for(lambda: viewer.last_pick is not None)
            assert f"leaf {viewer.last_pick.leaf}" in viewer.gui.status.content
