"""The selection loop of a project, kept by the server: one :class:`~hitlseg.selection.SelectionSession`
rebuilt from what the project stores.

"Learn filters" runs one round (:meth:`SelectionSession.step`) for every image whose latest markers
the filters have not seen yet (a newly marked image, or new strokes on one already learned), in
order of selection. Each round is recorded as a project event ``selection_round`` holding the
image, the marker *version* it used and the round's result (projection, recommendations,
stopping signal). That log is the loop's state:

* the page's selection view is answered from the last event, without any computation, even right
  after a restart;
* after a restart the session is rebuilt by replaying the logged rounds with the same marker
  versions (same seed, so the same filters and the same layout), in the background at startup
  (which also computes the superpixels of a new project) and in any case before the next round
  or heatmap;
* an image marked without being chosen in the selection view is recorded as selected (by
  ``"person"``) when its round runs.

Superpixels are computed once per project: the session's cache is the project's array store
(kind ``superpixels``). With a Dask executor (``hitlseg serve --workers N``) the session streams
instead (:class:`~hitlseg.selection.SelectionSession`): each file is read once on the server to
check it, then the workers read the images, compute superpixels and descriptors, and the zarr
stores under ``DIR/cluster/selection`` keep them (a restart reuses them).

An image whose file cannot be read (corrupt, truncated, deleted) is left out of the session's pool
with a warning (:mod:`hitlseg.server.reading`): it is never recommended, a pending round on it is
skipped and listed in the ``learn`` job's ``warnings``, and so is a logged round on it when the
session is rebuilt. The session needs at least two readable images.

Only images whose latest markers hold background and object strokes are learned from
(:func:`hitlseg.project.readiness.check_learnable`): :meth:`SelectionLoop.check_pending` refuses
"learn filters" naming each pending image that lacks one kind, before any job starts, and the job
checks again.

Selecting an image is idempotent (:meth:`SelectionLoop.select`): concurrent requests for one image
all succeed, one of them records the round.
"""

from __future__ import annotations

import threading

import numpy as np

from hitlseg.errors import InputError
from hitlseg.progress import Progress, report
from hitlseg.server.reading import Skipped, with_warnings
from hitlseg.server.security import NotFoundError

ROUND_EVENT = "selection_round"
#: Folder of the streaming session's zarr stores, inside the project folder.
STREAM_FOLDER = ("cluster", "selection")


def latest_class_counts(project, ids=None) -> dict[str, dict[int, int]]:
    """``{image_id: {label: pixels}}`` of the latest markers of ``ids`` (default: every image with a saved
    version), from the project's marker history (no array is read)."""
    ids = list(project.latest_versions()) if ids is None else list(ids)
    counts = {}
    for image_id in ids:
        history = project.marker_history(image_id)
        counts[image_id] = dict(history[-1]["class_counts"]) if history else {}
    return counts


def marked_versions(project) -> dict[str, int]:
    """``{image_id: latest version}`` of the project's images whose latest markers hold at least one marked pixel."""
    marked = {}
    for image_id, version in project.latest_versions().items():
        history = project.marker_history(image_id)
        if history and history[-1]["n_marked"] > 0:
            marked[image_id] = version
    return marked


class ProjectSuperpixels:
    """:class:`hitlseg.selection.SuperpixelStore` over the project's arrays (kind ``superpixels``)."""

    KIND = "superpixels"

    def __init__(self, project):
        self.project = project

    @staticmethod
    def _key(key: str) -> str:
        from hitlseg.project.files import safe_name

        return safe_name(key)

    def get(self, key: str):
        try:
            if not self.project.has_array(self.KIND, self._key(key)):
                return None
            return self.project.get_array(self.KIND, self._key(key))
        except InputError:  # unreadable: recomputed
            return None

    def put(self, key: str, labels) -> None:
        self.project.put_array(self.KIND, self._key(key), np.asarray(labels, dtype=np.int32))


class SelectionLoop:
    """Server-side state of the selection loop (see the module docstring).

    Parameters
    ----------
    project : Project
    seed, k, projection : passed to :class:`~hitlseg.selection.SelectionSession`.
    session_options : dict, optional
        Further keyword arguments of the session.
    classes : int
        Object classes of the project; with ``class_names``, named when markers lack some.
    class_names : list of str, optional
    executor : hitlseg.parallel.Executor, optional
        A distributed executor makes the session stream on its Dask workers (module docstring).
    """

    def __init__(self, project, *, seed: int = 0, k: int = 5, projection: str = "tsne",
                 session_options: dict | None = None, classes: int = 1, class_names: list[str] | None = None,
                 executor=None):
        self.project = project
        self.executor = executor if executor is not None and executor.distributed else None
        self.classes, self.class_names = int(classes), list(class_names or [])
        self.seed, self.k, self.projection = int(seed), int(k), projection
        self.session_options = dict(session_options or {})
        self.session = None
        self._lock = threading.RLock()
        self._replayed = 0  # rounds of the log replayed into self.session
        self._log: list[dict] = []  # payloads of the round events read so far (the log only grows)
        self._log_after = 0
        self._log_lock = threading.Lock()
        self._select_lock = threading.Lock()
        #: Images left out of the current session because they could not be read.
        self.unreadable = Skipped()
        self._index, self._index_key = None, None  # "similar images": an index of the last descriptors

    # -- the log -------------------------------------------------------------------------------
    def logged_rounds(self) -> list[dict]:
        """Payloads of the ``selection_round`` events, oldest first (read incrementally)."""
        with self._log_lock:
            for event in self.project.events(after=self._log_after, kind=ROUND_EVENT):
                self._log.append(event["payload"])
                self._log_after = event["id"]
            return list(self._log)

    def learned_versions(self, rounds: list[dict] | None = None) -> dict[str, int]:
        """``{image_id: marker version}`` that the current filters were learned from."""
        learned: dict[str, int] = {}
        for payload in self.logged_rounds() if rounds is None else rounds:
            learned[payload["image_id"]] = int(payload["version"])
        return learned

    def marked_versions(self) -> dict[str, int]:
        """``{image_id: latest version}`` of images whose latest markers hold at least one marked pixel."""
        return marked_versions(self.project)

    def pending(self, rounds: list[dict] | None = None) -> list[str]:
        """Marked images whose latest markers the filters have not learned, in the order they will be learned."""
        learned = self.learned_versions(rounds)
        marked = self.marked_versions()
        todo = [i for i, v in marked.items() if learned.get(i) != v]
        order = {image_id: position for position, image_id in enumerate(self.project.selected_ids())}
        return sorted(todo, key=lambda i: (order.get(i, len(order)), list(marked).index(i)))

    def check_pending(self, pending: list[str] | None = None) -> list[str]:
        """The pending images, once each holds background and object strokes
        (:func:`hitlseg.project.readiness.check_learnable`); raises :class:`InputError` naming those that do not,
        or when no image has markers. An empty list when every marked image is learned already."""
        from hitlseg.project.readiness import check_learnable

        if not self.marked_versions():
            check_learnable({}, self.classes, self.class_names, action="learn filters")
        todo = self.pending() if pending is None else pending
        if todo:
            check_learnable(latest_class_counts(self.project, todo), self.classes, self.class_names,
                            action="learn filters")
        return todo

    def proposal(self) -> str | None:
        """The first image to mark when nothing is learned yet: a seeded random pool image."""
        from hitlseg.selection import SelectionContext, make_selector

        ids = self.project.image_ids()
        if not ids:
            return None
        return make_selector("random", seed=self.seed).query(SelectionContext(pool=ids), 1)[0]

    def summary(self) -> dict:
        """What the selection view shows (no computation: answered from the project's log)."""
        rounds = self.logged_rounds()
        current = rounds[-1]["result"] if rounds else None
        return {
            "rounds": [{k: v for k, v in r["result"].items() if k not in ("projection", "recommendation")}
                       | {"version": r["version"]} for r in rounds],
            "current": current,
            "selected": self.project.selections(),
            "marked": self.marked_versions(),
            "learned": self.learned_versions(rounds),
            "pending": self.pending(rounds),
            "proposal": None if rounds else self.proposal(),
            "session_ready": self.session is not None and self._replayed == len(rounds),
        }

    # -- selecting -----------------------------------------------------------------------------
    def selected_round(self, image_id: str) -> int | None:
        """The selection round of ``image_id``, or None when it was not selected."""
        for row in self.project.selections():
            if row["image_id"] == image_id:
                return int(row["round"])
        return None

    def select(self, image_id: str, source: str) -> tuple[int, bool]:
        """Record ``image_id`` as the next selection round unless it is selected already.

        Idempotent: of concurrent calls for one image (requests of this server, its ``learn`` job,
        another process on the project) one records the round and the others answer it.

        Returns
        -------
        round : int
        already_selected : bool
            True when the image had been selected before this call.
        """
        with self._select_lock:
            previous = self.selected_round(image_id)
            if previous is not None:
                return previous, True
            try:
                return self.project.add_selection(image_id, source), False
            except InputError:  # selected meanwhile by another process (else a real error: raised)
                previous = self.selected_round(image_id)
                if previous is None:
                    raise
                return previous, True

    # -- the session ---------------------------------------------------------------------------
    def _build(self, progress: Progress):
        from hitlseg.selection import SelectionSession

        skipped = Skipped()
        ids = self.project.image_ids()
        if self.executor is not None:
            return self._build_streaming(ids, skipped, progress)
        images = skipped.images(self.project, ids, "building the selection pool", progress)
        if len(images) < 2:
            raise InputError(f"selection: only {len(images)} of the project's {len(ids)} images can be read "
                             f"(skipped {skipped.summary()}); the selection loop needs at least 2")
        session = SelectionSession(images, superpixel_cache=ProjectSuperpixels(self.project), seed=self.seed, k=self.k,
                                   projection=self.projection, progress=progress, **self.session_options)
        self.unreadable = skipped
        self._warm_up(progress)
        return session

    def _warm_up(self, progress: Progress) -> None:
        """UMAP's numba compilation now, in the background job, not at the person's first round."""
        from hitlseg.selection.projection import preload

        if self.projection == "umap":
            report(progress, 0, 1, "preparing the UMAP projection (compiled once, about 6 s)")
            preload(self.projection, compile=True)

    def _build_streaming(self, ids: list[str], skipped: Skipped, progress: Progress):
        """The session on the executor's workers: every file checked here (read, not kept), the pool a Dataset."""
        from hitlseg.selection import SelectionSession

        readable = []
        for done, image_id in enumerate(ids):
            report(progress, done, len(ids), "checking the images")
            if skipped.image(self.project, image_id, "building the selection pool") is not None:
                readable.append(image_id)
        if len(readable) < 2:
            raise InputError(f"selection: only {len(readable)} of the project's {len(ids)} images can be read "
                             f"(skipped {skipped.summary()}); the selection loop needs at least 2")
        pool = self.project.dataset().subset(readable)
        store = self.project.root.joinpath(*STREAM_FOLDER)
        session = SelectionSession(pool, seed=self.seed, k=self.k, projection=self.projection, progress=progress,
                                   executor=self.executor, store=store, **self.session_options)
        self.unreadable = skipped
        self._warm_up(progress)
        return session

    def ensure_session(self, progress: Progress = None, skipped: Skipped | None = None):
        """The session, built and brought up to date with the logged rounds (blocking).

        A logged round on an image left out of the pool (unreadable) or whose markers cannot be
        read is skipped (recorded in ``skipped``).
        """
        skipped = Skipped() if skipped is None else skipped
        with self._lock:
            rounds = self.logged_rounds()
            if self.session is None or self._replayed > len(rounds):
                self.session, self._replayed = self._build(progress), 0
            for index in range(self._replayed, len(rounds)):
                payload = rounds[index]
                report(progress, index, len(rounds), f"replaying round {index + 1} of {len(rounds)}")
                self._replay(payload, skipped)
                self._replayed = index + 1
            return self.session

    def _replay(self, payload: dict, skipped: Skipped) -> None:
        image_id = payload["image_id"]
        if image_id in self.unreadable:
            skipped.add(image_id, f"its file cannot be read ({self.unreadable.reasons[image_id]})",
                        f"replaying round {payload.get('round', '?')}")
            return
        try:
            markers, _ = self.project.load_markers(image_id, payload["version"])
        except InputError as exc:
            skipped.add(image_id, exc, f"replaying round {payload.get('round', '?')}")
            return
        self.session.step(image_id, markers)

    def restore(self, progress: Progress = None) -> dict:
        """Build the session and replay the logged rounds (the startup job)."""
        skipped = Skipped()
        self.ensure_session(progress, skipped)
        return with_warnings({"rounds": self._replayed}, self.unreadable, skipped)

    def learn(self, progress: Progress = None) -> dict:
        """Run a round for every pending image; returns the last round's result (the ``learn`` job)."""
        with self._lock:
            todo = self.check_pending()
            if not todo:
                rounds = self.logged_rounds()
                return {"rounds": [], "current": rounds[-1]["result"] if rounds else None,
                        "message": "the filters already know every saved marker version"}

            def building(done, total, message):
                report(progress, done, total, f"preparing: {message}")

            skipped = Skipped()
            session = self.ensure_session(building, skipped)
            learned = []
            result = None
            for index, image_id in enumerate(todo):
                report(progress, index, len(todo), f"learning filters from {image_id} ({index + 1} of {len(todo)})")
                round_ = self._learn_one(session, image_id, skipped)
                if round_ is not None:
                    result = round_.pop("result")
                    learned.append(round_)
            if not learned:
                raise InputError(f"learn filters: none of the newly marked images can be read or learned from "
                                 f"({skipped.summary()}); replace or remove the damaged files, or mark another image")
            report(progress, len(todo), len(todo), "done")
            return with_warnings({"rounds": learned, "current": result}, self.unreadable, skipped)

    def _learn_one(self, session, image_id: str, skipped: Skipped) -> dict | None:
        """One logged round on ``image_id``'s latest markers; None (recorded in ``skipped``) when unreadable."""
        if image_id in self.unreadable:
            skipped.add(image_id, f"its file cannot be read ({self.unreadable.reasons[image_id]})", "learning filters")
            return None
        try:
            markers, version = self.project.load_markers(image_id)
        except InputError as exc:
            skipped.add(image_id, exc, "learning filters")
            return None
        from hitlseg.project.readiness import problem

        lacking = problem(markers, self.classes, self.class_names)
        if lacking is not None:  # saved after this job checked the pending images
            skipped.add(image_id, f"its latest markers hold {lacking.replace('; ', ' (', 1)})", "learning filters")
            return None
        round_result = session.step(image_id, markers)
        self.select(image_id, "person")
        result = round_result.to_dict()
        self.project.record_event(ROUND_EVENT, {"image_id": image_id, "version": version,
                                                "round": round_result.round, "result": result})
        self._replayed += 1
        return {"image_id": image_id, "version": version, "round": round_result.round, "result": result}

    def similar(self, image_id: str, k: int = 6) -> dict:
        """The ``k`` pool images nearest to ``image_id`` by the current filters' selection descriptor.

        A :class:`hitlseg.retrieval.RetrievalIndex` (exact search) over the last round's
        descriptors, rebuilt when a round changes them; the image itself is left out.
        """
        from hitlseg.retrieval import RetrievalIndex, similar_images

        if not self.logged_rounds():
            raise NotFoundError("similar images: no filters yet; mark an image and learn filters first")
        with self._lock:
            session = self.ensure_session()
            if image_id not in session.ids:
                raise NotFoundError(f"similar images: {image_id!r} is not in the selection pool "
                                    "(its file cannot be read)")
            key = (id(session), len(session.rounds))
            if self._index_key != key:
                self._index, self._index_key = RetrievalIndex.build(session.ids, session.descriptors), key
            hits = similar_images(self._index, image_id, min(int(k) + 1, len(session.ids)))
        similar = [hit for hit in hits if hit["id"] != image_id][: int(k)]
        for rank, hit in enumerate(similar, 1):
            hit["rank"] = rank
        return {"image_id": image_id, "round": len(session.rounds), "descriptor": "gtfree", "similar": similar}

    def heatmap(self, image_id: str, slice_index: int | None, axis: int) -> bytes:
        """PNG of the filters' attention over ``image_id`` (3D: one slice)."""
        if not self.logged_rounds():
            raise NotFoundError("heatmap: no filters yet; mark an image and learn filters first")
        with self._lock:
            session = self.ensure_session()
            options = {} if slice_index is None else {"slice_index": slice_index, "axis": axis}
            return session.heatmap(image_id, **options)

