"""``openins view RUN``: a viser web viewer of a trained run.

The browser shows the run's newest Gaussians as splats (covariances from the scales and
rotations, colours from the SH DC term, the trained opacities), the training cameras as frustums
(click one to look through it), and a panel with:

* a colour mode: RGB, instance (one stable colour per leaf, grey for unassigned Gaussians) or
  coarse cluster;
* a text box with a ``query`` button: the Gaussians ``openins query`` selects for the text stay
  in colour while the rest is dimmed or hidden, with the best leaf, its cosine and the counts;
* click-to-select: the Gaussian under the cursor (nearest centre to the click ray, within a few
  pixels) selects its whole leaf, shown with its id, views and the best-matching recent query;
* ``clear``.

A run without ``instances.npz`` (stage 0 only) is shown in RGB without the query box. Scenes
larger than ``max_gaussians`` are sent to the browser as a fixed random subset (selection and
picking still use every Gaussian's leaf). The logic lives in plain functions
(:mod:`.colors`, :mod:`.geometry`, :mod:`.data`); this module only wires them to viser.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import BackendError, ConfigError, OpenInsError
from ..run.query_config import QueryConfig
from .colors import highlight, instance_colors
from .data import LeafInfo, QuerySelection, TextSelector, ViewerRun, leaf_info, load_viewer_run
from .geometry import pick_along_ray, splat_covariances, subsample_indices, up_direction

log = logging.getLogger(__name__)

ColorMode = Literal["rgb", "instance", "coarse"]
COLOR_LABELS: dict[str, str] = {"rgb": "RGB", "instance": "instance", "coarse": "coarse cluster"}
SPLATS = "/gaussians"


@dataclass
class ViewerConfig:
    """Settings of ``openins view``."""

    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 to reach the viewer from other machines)."""
    port: int = 8080
    """Port to listen on; the next free one is taken when it is busy (0: any free port)."""
    max_gaussians: int = 1_000_000
    """Most Gaussians sent to the browser; larger runs show a fixed random subset."""
    seed: int = 0
    """Seed of that subset (the same run always shows the same Gaussians)."""
    color_mode: ColorMode = "instance"
    """Initial colours: rgb, instance (per leaf) or coarse (per coarse cluster); rgb when the run
    has no instances."""
    others: Literal["dim", "hide"] = "dim"
    """What happens to the Gaussians outside a selection."""
    show_cameras: bool = True
    """Show the training cameras as frustums."""
    camera_images: bool = False
    """Put each training image (thumbnail) into its frustum (reads every image at start-up)."""
    pick_tolerance: float = 0.01
    """Click picking: largest angle (radians) between the click ray and a Gaussian centre."""
    min_pick_opacity: float = 0.1
    """Click picking ignores Gaussians more transparent than this."""
    device: str | None = None
    """Torch device of a CLIP text tower (None: the run's device setting)."""
    min_relevancy: float | None = None
    """Text queries select nothing when the best leaf's canonical-phrase relevancy is not above
    this (None: the run's ``query.min_relevancy``), as ``openins query --min-relevancy``."""
    prompt_template: str | None = None
    """CLIP prompt of text queries (None: the run's ``query.prompt_template``), as
    ``openins query --prompt-template``."""


@dataclass
class ViewerGui:
    """The panel's handles (viser GUI handles; None where the run lacks what they need)."""

    info: Any
    color_mode: Any
    others: Any
    show_cameras: Any
    click_select: Any
    clear: Any
    status: Any
    query_text: Any | None = None
    query_button: Any | None = None


def _import_viser() -> Any:
    try:
        import viser
    except ImportError as e:
        raise BackendError(
            f"the viewer needs viser, which is not installed ({e}); install the 'viewer' extra: "
            "pip install -e '.[viewer]'"
        ) from None
    return viser


def _display_host(host: str) -> str:
    return "localhost" if host in ("", "0.0.0.0", "::") else host


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "frame"


@dataclass
class Viewer:
    """A running viewer: the viser server, the shown data and the current selection.

    Use :func:`build_viewer` to make one; :meth:`stop` (or ``with``) shuts the server down.
    """

    server: Any
    data: ViewerRun
    cfg: ViewerConfig
    gui: ViewerGui
    keep: np.ndarray  # [M] int64 indices of the Gaussians shown in the browser
    selector: TextSelector | None = None
    selector_problem: str | None = None
    splats: Any = None
    frustums: list[Any] = field(default_factory=list)
    selection: np.ndarray | None = None  # [N] bool highlighted Gaussians, None: nothing selected
    last_query: QuerySelection | None = None
    last_pick: LeafInfo | None = None
    _covariances: np.ndarray | None = None  # [M, 3, 3]
    _shown_opacity: np.ndarray | None = None  # [M] opacities as last sent
    _colors: dict[str, np.ndarray] = field(default_factory=dict)  # mode -> [M, 3]
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _stopped: bool = False
    _click_on: bool = False

    # ---- properties -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self.server.get_port())

    @property
    def url(self) -> str:
        return f"http://{_display_host(self.cfg.host)}:{self.port}"

    @property
    def color_modes(self) -> list[str]:
        """Colour modes this run supports (config names)."""
        return ["rgb", "instance", "coarse"] if self.data.instances is not None else ["rgb"]

    # ---- colours and splats ---------------------------------------------------------------------
    def colors(self, mode: str) -> np.ndarray:
        """``[M, 3]`` colours of the shown Gaussians in colour mode ``mode`` (config name)."""
        if mode not in self.color_modes:
            raise ConfigError(f"colour mode {mode!r} not available here; choose {self.color_modes}")
        if mode not in self._colors:
            inst = self.data.instances
            if mode == "rgb" or inst is None:
                rgb = self.data.rgb[self.keep]
            elif mode == "instance":
                rgb = instance_colors(inst.leaf_ind[self.keep], inst.num_leaves)
            else:
                rgb = instance_colors(inst.coarse_ind[self.keep], inst.k1)
            self._colors[mode] = np.ascontiguousarray(rgb, dtype=np.float32)
        return self._colors[mode]

    def current_mode(self) -> str:
        label = str(self.gui.color_mode.value)
        return next((k for k, v in COLOR_LABELS.items() if v == label), "rgb")

    def refresh(self) -> None:
        """Send the splats with the current colour mode and selection to the browser."""
        with self._lock:
            rgb = self.colors(self.current_mode())
            opacity = self.data.opacities[self.keep]
            mask = None if self.selection is None else self.selection[self.keep]
            rgb, opacity = highlight(rgb, opacity, mask, others=self.gui.others.value)
            if self._covariances is None:
                self._covariances = splat_covariances(
                    self.data.quats[self.keep], self.data.scales[self.keep]
                )
            scene = self.server.scene
            # early viser releases named it _add_gaussian_splats
            add = getattr(scene, "add_gaussian_splats", None) or scene._add_gaussian_splats
            self.splats = add(
                SPLATS,
                centers=self.data.means[self.keep],
                covariances=self._covariances,
                rgbs=rgb,
                opacities=opacity[:, None],
            )
            self._shown_opacity = opacity

    def set_status(self, markdown: str) -> None:
        self.gui.status.content = markdown

    # ---- selection ------------------------------------------------------------------------------
    def query(self, text: str) -> QuerySelection:
        """Select and highlight the Gaussians of ``text`` (the selection of ``openins query``).

        Raises:
            ConfigError: the run has no instances or no usable text encoder, or empty text.
        """
        if self.selector is None:
            raise ConfigError(self.selector_problem or "text queries are not available")
        with self._lock:
            sel = self.selector.select(text)
            self.last_query, self.last_pick = sel, None
            self.selection = sel.mask
            self.refresh()
            shown = int(sel.mask[self.keep].sum())
            if sel.best_leaf is None:
                q = self.selector.query
                self.set_status(
                    f"**{sel.text}**: no leaf matched in at least {q.min_views_select} views"
                )
            elif not sel.found:
                self.set_status(
                    f"**{sel.text}**: not found: {sel.reason} (best leaf {sel.best_leaf}, "
                    f"relevancy {sel.relevancy or 0.0:.3f})"
                )
            else:
                extra = "" if shown == sel.n_gaussians else f" ({shown:,} shown)"
                leaves = ", ".join(str(x) for x in sel.leaves.tolist())
                self.set_status(
                    f"**{sel.text}**: best leaf {sel.best_leaf} (cosine {sel.score or 0.0:.3f}, "
                    f"relevancy {sel.relevancy or 0.0:.3f}); {len(sel.leaves)} leaves "
                    f"[{leaves}]; "
                    f"{sel.n_gaussians:,} Gaussians{extra}"
                )
        return sel

    def safe_refresh(self) -> None:
        """``refresh`` for GUI callbacks: a failure shows in the panel and the log."""
        try:
            self.refresh()
        except Exception as e:
            self.set_status(f"display update failed: {type(e).__name__}: {e}")
            log.exception("display update failed")

    def submit_query(self) -> QuerySelection | None:
        """What the ``query`` button does: query the text box; errors go to the panel."""
        if self.gui.query_text is None:
            self.set_status(self.selector_problem or "text queries are not available")
            return None
        try:
            return self.query(str(self.gui.query_text.value))
        except OpenInsError as e:
            self.set_status(f"query failed: {e}")
            log.warning("query failed: %s", e)
        except Exception as e:  # a callback thread must not swallow it: show it in the panel
            self.set_status(f"query failed: {type(e).__name__}: {e}")
            log.exception("query failed")
        return None

    def pick(
        self, origin: tuple[float, float, float], direction: tuple[float, float, float]
    ) -> LeafInfo | None:
        """What a click does: select the leaf of the Gaussian hit by the ray (None: no hit)."""
        with self._lock:
            eligible = self.data.opacities[self.keep] >= self.cfg.min_pick_opacity
            if self._shown_opacity is not None:
                eligible &= self._shown_opacity > 0
            radii = self.data.scales[self.keep].max(axis=1)
            hit = pick_along_ray(
                origin,
                direction,
                self.data.means[self.keep],
                self.cfg.pick_tolerance,
                eligible=eligible,
                radii=radii,
            )
            if hit is None:
                self.set_status("click: no Gaussian under the cursor")
                return None
            g = int(self.keep[hit])
            pos = ", ".join(f"{x:.3f}" for x in self.data.means[g])
            inst = self.data.instances
            if inst is None:
                self.set_status(f"Gaussian {g} at ({pos}); no instances in this run")
                return None
            info = leaf_info(inst, g, self.selector)
            self.last_pick, self.last_query = info, None
            if info.leaf is None:
                self.selection = None
                self.refresh()
                self.set_status(f"Gaussian {g} at ({pos}) belongs to no instance")
                return info
            self.selection = info.mask
            self.refresh()
            best = (
                f"; best recent query **{info.best_query}** (cosine {info.best_query_score:.3f})"
                if info.best_query is not None
                else ""
            )
            self.set_status(
                f"leaf {info.leaf} (coarse {info.coarse}): {info.n_gaussians:,} Gaussians, "
                f"matched in {info.views} views{best}"
            )
            return info

    def clear(self) -> None:
        """Drop the selection: every Gaussian back in its colours."""
        with self._lock:
            self.selection, self.last_query, self.last_pick = None, None, None
            self.refresh()
            self.set_status("nothing selected")

    def set_cameras_visible(self, visible: bool) -> None:
        for h in self.frustums:
            h.visible = bool(visible)

    # ---- click handling -------------------------------------------------------------------------
    def _on_scene_click(self, event: Any) -> None:
        origin = getattr(event, "ray_origin", None)
        direction = getattr(event, "ray_direction", None)
        if origin is None or direction is None:
            return
        try:
            self.pick(origin, direction)
        except OpenInsError as e:
            self.set_status(f"selection failed: {e}")
        except Exception as e:  # a callback thread must not swallow it: show it in the panel
            self.set_status(f"selection failed: {type(e).__name__}: {e}")
            log.exception("selection failed")

    def enable_click_select(self, on: bool) -> None:
        """Register (or remove) the scene click callback."""
        scene = self.server.scene
        if on == self._click_on:
            return
        self._click_on = on
        if on:
            if hasattr(scene, "on_click"):
                scene.on_click()(self._on_scene_click)
            else:
                scene.on_pointer_event(event_type="click")(self._on_scene_click)
        elif hasattr(scene, "remove_click_callback"):
            scene.remove_click_callback(self._on_scene_click)
        else:
            scene.remove_pointer_callback()

    # ---- lifetime -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the server (idempotent)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.server.stop()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- building -----------------------------------------------------------------------------------
def check_listen_address(host: str, port: int) -> None:
    """Refuse an address this machine cannot listen on, before viser tries it (viser retries
    the next 1000 ports and then waits forever when the host itself is not local)."""
    import socket

    if not 0 <= int(port) <= 65535:
        raise ConfigError(f"port must lie in 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(
            host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, addr = infos[0]
        with socket.socket(family, kind, proto) as s:
            s.bind(addr)
    except OSError as e:
        raise ConfigError(
            f"cannot listen on host {host!r} ({e}); use 127.0.0.1 (this machine) or 0.0.0.0 "
            "(all interfaces)"
        ) from None


def _make_server(viser: Any, cfg: ViewerConfig) -> Any:
    kwargs: dict[str, Any] = {"host": cfg.host, "port": cfg.port}
    params = inspect.signature(viser.ViserServer.__init__).parameters
    if "label" in params:
        kwargs["label"] = "openinsgaussian"
    try:
        return viser.ViserServer(**kwargs)
    except OSError as e:
        raise ConfigError(f"cannot serve on {cfg.host}:{cfg.port} ({e})") from None


def _add_cameras(viewer: Viewer, viser: Any) -> None:
    scene = viewer.data.scene
    if scene is None:
        return
    frames = scene.train_frames
    c2w = np.stack([f.camera.cam_to_world.numpy() for f in frames])  # [F, 4, 4]
    # frustum size: 3 % of the scene's extent (robust to floaters)
    pts = viewer.data.means if len(viewer.data.means) else c2w[:, :3, 3]
    lo, hi = np.percentile(pts, [2, 98], axis=0)
    size = float(np.linalg.norm(hi - lo)) or 1.0
    from viser import transforms as vtf

    for i, f in enumerate(frames):
        cam = f.camera
        image = None
        if viewer.cfg.camera_images:
            rgb = f.load_rgb()  # [H, W, 3]
            step = max(1, int(np.ceil(max(rgb.shape[:2]) / 160)))
            image = np.ascontiguousarray(rgb[::step, ::step])
        wxyz = vtf.SO3.from_matrix(c2w[i, :3, :3]).wxyz
        handle = viewer.server.scene.add_camera_frustum(
            f"/cameras/{i:04d}_{_safe_name(f.name)}",
            fov=float(cam.fov_y),
            aspect=float(cam.width) / float(cam.height),
            scale=0.03 * size,
            color=(40, 90, 200),
            image=image,
            wxyz=wxyz,
            position=c2w[i, :3, 3],
            visible=viewer.cfg.show_cameras,
        )

        def look_through(
            event: Any, wxyz: np.ndarray = wxyz, pos: np.ndarray = c2w[i, :3, 3]
        ) -> None:
            client = getattr(event, "client", None)
            if client is None:
                return
            with client.atomic():
                client.camera.position = pos
                client.camera.wxyz = wxyz

        handle.on_click(look_through)
        viewer.frustums.append(handle)


def _initial_view(viewer: Viewer) -> None:
    """Up axis from the training cameras; new browsers start at the first training camera looking
    at the middle of the scene."""
    scene = viewer.data.scene
    if scene is None or not scene.train_frames:
        return
    c2w = np.stack([f.camera.cam_to_world.numpy() for f in scene.train_frames])
    viewer.server.scene.set_up_direction(tuple(float(x) for x in up_direction(c2w)))
    start = c2w[0, :3, 3]
    means = viewer.data.means
    target = np.median(means, axis=0) if len(means) else start + c2w[0, :3, 2]
    if np.linalg.norm(target - start) < 1e-6:
        target = start + c2w[0, :3, 2]

    @viewer.server.on_client_connect
    def _(client: Any) -> None:
        client.camera.position = start
        client.camera.look_at = target


def _build_gui(viewer: Viewer) -> None:
    """Create the panel; fills ``viewer.gui`` and wires the callbacks."""
    server, data, cfg = viewer.server, viewer.data, viewer.cfg
    gui = server.gui
    inst = data.instances
    n, m = data.num_gaussians, len(viewer.keep)
    shown = f"{n:,} Gaussians" + ("" if m == n else f" ({m:,} shown)")
    lines = [f"**{data.run.path.name}**: {shown} from `{data.model_source}`"]
    if inst is not None:
        lines.append(
            f"{inst.num_leaves} leaves ({inst.k1} x {inst.k2}), language `{inst.language_source}`"
        )
    if data.scene_problem:
        lines.append(f"no cameras: {data.scene_problem}")
    info = gui.add_markdown("  \n".join(lines))
    modes = viewer.color_modes
    initial = cfg.color_mode if cfg.color_mode in modes else "rgb"
    with gui.add_folder("Display"):
        color_mode = gui.add_dropdown(
            "colour", [COLOR_LABELS[k] for k in modes], initial_value=COLOR_LABELS[initial]
        )
        others = gui.add_dropdown("unselected", ["dim", "hide"], initial_value=cfg.others)
        show_cameras = gui.add_checkbox("cameras", cfg.show_cameras)
        click_select = gui.add_checkbox("click to select", True)
    query_text = query_button = None
    with gui.add_folder("Select"):
        if viewer.selector is not None:
            query_text = gui.add_text("text", "")
            query_button = gui.add_button("query")
        else:
            gui.add_markdown(f"Text queries unavailable: {viewer.selector_problem}")
        clear = gui.add_button("clear")
        status = gui.add_markdown("nothing selected")
    viewer.gui = ViewerGui(
        info=info,
        color_mode=color_mode,
        others=others,
        show_cameras=show_cameras,
        click_select=click_select,
        clear=clear,
        status=status,
        query_text=query_text,
        query_button=query_button,
    )
    color_mode.on_update(lambda _: viewer.safe_refresh())
    others.on_update(lambda _: viewer.safe_refresh())
    show_cameras.on_update(lambda _: viewer.set_cameras_visible(show_cameras.value))
    click_select.on_update(lambda _: viewer.enable_click_select(bool(click_select.value)))
    clear.on_click(lambda _: viewer.clear())
    if query_button is not None:
        query_button.on_click(lambda _: viewer.submit_query())


def build_viewer(
    run: Path | str, cfg: ViewerConfig | None = None, *, query: QueryConfig | None = None
) -> Viewer:
    """Load ``run`` and start its viewer (non-blocking; call :meth:`Viewer.stop` when done).

    Args:
        run: run directory (any finished stage; instances need stage 3).
        cfg: viewer settings.
        query: selection settings of text queries (default: the run's ``query`` config section,
            as ``openins query``).

    Raises:
        RunError / DataError: the run or its Gaussians are missing or unreadable.
        ConfigError: a bad setting (e.g. a host this machine cannot listen on).
        BackendError: viser is not installed.
    """
    cfg = cfg or ViewerConfig()
    if cfg.pick_tolerance <= 0:
        raise ConfigError(f"pick_tolerance must be positive, got {cfg.pick_tolerance}")
    if cfg.max_gaussians <= 0:
        raise ConfigError(f"max_gaussians must be positive, got {cfg.max_gaussians}")
    check_listen_address(cfg.host, cfg.port)
    viser = _import_viser()
    data = load_viewer_run(run)
    keep = subsample_indices(data.num_gaussians, cfg.max_gaussians, cfg.seed)
    selector, problem = None, data.instances_problem
    if data.instances is not None:
        try:
            if query is None and (cfg.min_relevancy, cfg.prompt_template) != (None, None):
                query = data.config.query
                if cfg.min_relevancy is not None:
                    query = replace(query, min_relevancy=cfg.min_relevancy)
                if cfg.prompt_template is not None:
                    query = replace(query, prompt_template=cfg.prompt_template)
            selector = TextSelector.from_run(data, query=query, device=cfg.device)
        except OpenInsError as e:
            problem = str(e)
    if problem:
        log.warning("%s", problem)
    server = _make_server(viser, cfg)
    viewer = Viewer(
        server=server,
        data=data,
        cfg=cfg,
        gui=None,
        keep=keep,  # type: ignore[arg-type]
        selector=selector,
        selector_problem=problem,
    )
    try:
        _build_gui(viewer)
        viewer.refresh()
        _add_cameras(viewer, viser)
        _initial_view(viewer)
        viewer.enable_click_select(True)
    except BaseException:
        viewer.stop()
        raise
    return viewer


def serve(
    run: Path | str,
    cfg: ViewerConfig | None = None,
    *,
    query: QueryConfig | None = None,
    stop: threading.Event | None = None,
) -> None:
    """``openins view RUN``: start the viewer, print its address and block until Ctrl-C (or until
    ``stop`` is set), then shut the server down."""
    cfg = cfg or ViewerConfig()
    print(f"loading {run} ...", flush=True)
    viewer = build_viewer(run, cfg, query=query)
    stop = stop or threading.Event()
    try:
        n, m = viewer.data.num_gaussians, len(viewer.keep)
        shown = "" if n == m else f" ({m:,} shown, max_gaussians={cfg.max_gaussians:,})"
        print(f"{n:,} Gaussians{shown}", flush=True)
        if viewer.selector_problem:
            print(f"note: {viewer.selector_problem}", flush=True)
        print(f"viewer running at {viewer.url} (Ctrl-C to stop)", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("stopping the viewer", flush=True)
    finally:
        viewer.stop()


__all__ = [
    "COLOR_LABELS",
    "Viewer",
    "ViewerConfig",
    "ViewerGui",
    "build_viewer",
    "check_listen_address",
    "serve",
]
