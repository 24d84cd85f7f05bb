"""What markers must hold before they are stored as a first version, and before anything learns from them.

One rule, applied by every path that saves or learns (the server's marker save, "start from the
prediction", "learn filters", training and retraining):

Saving (:func:`check_saveable`)
    The first version of an image's markers must hold at least one stroke: an empty first version
    is nothing but noise in the history (and made an unmarked image look "saved"). Once an image
    has a version, any edit may be saved, erasing every stroke included (a real edit). A save
    identical to the latest version writes nothing: the latest version is the answer.

Learning (:func:`check_learnable`)
    A selection round ("learn filters") learns from one image: that image must hold strokes of
    the background (marker label 1) **and** of at least one object class (label c+1 for class
    c >= 1). Training and retraining learn from every marked image at once: together they must
    hold both kinds (``per_image=False``), because an image with only background strokes is a
    real negative example (an image without objects). Images whose latest markers hold no stroke
    at all (never marked, or erased) are not learned from; at least one image must be left.

Why per image for a round: the adaptive decoders contrast object kernels with background kernels
(:mod:`hitlseg.flim.decoders`, "mark both classes"), and a round's filters, recommendations and
stopping signal are logged and replayed forever; in use an image with one kind of stroke was an
unfinished annotation (a save half-way, a forgotten class). Training itself needs both kinds only
over the whole set (:mod:`hitlseg.pseudo.selftrain`), which is what its check asks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hitlseg.errors import InputError

#: Marker label of the background (label c+1 is object class c).
BACKGROUND = 1
#: Images named in one refusal; more are counted.
MAX_NAMED = 10


def marker_labels(markers) -> set[int]:
    """Marker labels present (> 0) in ``markers``.

    Parameters
    ----------
    markers : ndarray of int or mapping
        A marker label array (0 unmarked, 1 background, c+1 for class c), or the
        ``{label: pixels}`` counts of one (as in :meth:`hitlseg.project.Project.marker_history`).

    Returns
    -------
    set of int
    """
    if isinstance(markers, Mapping):
        return {int(label) for label, count in markers.items() if int(label) > 0 and int(count) > 0}
    array = np.asarray(markers)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"markers: expected integer labels (0 unmarked, c+1 for class c), got {array.dtype}")
    return {int(v) for v in np.unique(array) if v > 0}


def missing_classes(markers, n_classes: int) -> list[int]:
    """Classes the learning rule still asks of one image's markers.

    Parameters
    ----------
    markers : ndarray of int or mapping
        See :func:`marker_labels`.
    n_classes : int
        Object classes of the project (1..n_classes; 0 is the background).

    Returns
    -------
    list of int
        ``[]`` when the image can be learned from; ``[0]`` when background strokes are missing;
        ``[1, ..., n_classes]`` when object strokes are missing (strokes of any one of these
        classes suffice); ``[0, 1, ..., n_classes]`` when the image has no stroke.

    Examples
    --------
    >>> import numpy as np
    >>> markers = np.zeros((4, 4), np.uint8); markers[0, :2] = 1
    >>> missing_classes(markers, 1)
    [1]
    >>> markers[3, :2] = 2
    >>> missing_classes(markers, 1)
    []
    """
    n_classes = _check_n_classes(n_classes)
    labels = marker_labels(markers)
    missing = [] if BACKGROUND in labels else [0]
    if not any(label > BACKGROUND for label in labels):
        missing += list(range(1, n_classes + 1))
    return missing


def problem(markers, n_classes: int, names: Sequence[str] | None = None) -> str | None:
    """What one image's markers lack for learning, in words (None when nothing is missing).

    E.g. ``"only background strokes; mark the object (class 1 'nucleus') too"``.
    """
    n_classes = _check_n_classes(n_classes)
    labels = marker_labels(markers)
    missing = missing_classes(markers, n_classes)
    if not missing:
        return None
    if not labels:
        return f"no strokes; mark the background and {_objects(n_classes, names)}"
    if missing == [0]:
        objects = sorted(label - 1 for label in labels)
        return f"only strokes of {_classes(objects, names)}; mark the background too"
    return f"only background strokes; mark {_objects(n_classes, names)} too"


def check_learnable(markers_by_image: Mapping[str, object], n_classes: int, names: Sequence[str] | None = None, *,
                    per_image: bool = True, action: str | None = None) -> list[str]:
    """Check that ``markers_by_image`` can be learned from (the rule of the module docstring).

    Parameters
    ----------
    markers_by_image : mapping of str to ndarray or mapping
        ``{image_id: markers}``: the latest markers of the images a path would learn from, as
        label arrays or ``{label: pixels}`` counts (see :func:`marker_labels`).
    n_classes : int
        Object classes of the project (named in the messages).
    names : sequence of str, optional
        Names of object classes 1, 2, ... (``ServerState.class_names``); default names
        ``"Class c"`` are not repeated in messages.
    per_image : bool
        True (default): every image with strokes must hold background and object strokes.
        False: only the images together must (what training itself requires).
    action : str, optional
        What is refused (e.g. ``"train"``), the start of the message.

    Returns
    -------
    list of str
        The images that will be learned from (those with at least one stroke), in the given order.

    Raises
    ------
    InputError
        No image has strokes, or (``per_image``) an image lacks background or object strokes, or
        (not ``per_image``) all images together lack one kind; the message names each image and
        what to mark, e.g. ``"train: image 'wbc_090': only background strokes; mark the object
        (class 1 'nucleus') too"``.

    Examples
    --------
    >>> import numpy as np
    >>> done = np.zeros((4, 4), np.uint8); done[0, :2] = 1; done[3, :2] = 2
    >>> half = np.zeros((4, 4), np.uint8); half[0, :2] = 1
    >>> check_learnable({"a": done, "b": np.zeros((4, 4), np.uint8)}, 1)
    ['a']
    >>> check_learnable({"a": done, "b": half}, 1, ["nucleus"], action="train")
    Traceback (most recent call last):
    ...
    hitlseg.errors.InputError: train: image 'b': only background strokes; mark the object (class 1 'nucleus') too
    >>> check_learnable({"a": done, "b": half}, 1, per_image=False)
    ['a', 'b']
    """
    n_classes = _check_n_classes(n_classes)
    start = f"{action}: " if action else ""
    labels = {image_id: marker_labels(markers) for image_id, markers in markers_by_image.items()}
    marked = [image_id for image_id, present in labels.items() if present]
    if not marked:
        raise InputError(f"{start}no image has markers yet; mark the background and {_objects(n_classes, names)} "
                         "on an image and save them first")
    if per_image:
        problems = [(image_id, problem(markers_by_image[image_id], n_classes, names)) for image_id in marked]
        problems = [(image_id, text) for image_id, text in problems if text is not None]
        if problems:
            shown = [f"image {image_id!r}: {text}" for image_id, text in problems[:MAX_NAMED]]
            more = len(problems) - len(shown)
            raise InputError(start + ". ".join(shown) + (f" (and {more} more images)" if more else ""))
        return marked
    union = set().union(*(labels[image_id] for image_id in marked))
    if BACKGROUND in union and any(label > BACKGROUND for label in union):
        return marked
    shown = ", ".join(repr(i) for i in marked[:MAX_NAMED]) + (f" and {len(marked) - MAX_NAMED} more"
                                                               if len(marked) > MAX_NAMED else "")
    if BACKGROUND in union:
        held, need = "only background strokes", _objects(n_classes, names)
    else:
        held, need = f"only strokes of {_classes(sorted(c - 1 for c in union), names)}", "the background"
    raise InputError(f"{start}the marked images ({shown}) together hold {held}; mark {need} on at least one of them")


def check_saveable(markers, previous=None, *, name: str = "markers") -> bool:
    """Whether a save of ``markers`` over ``previous`` writes a new version.

    Parameters
    ----------
    markers : ndarray of int
        The labels to save.
    previous : ndarray of int, optional
        The latest saved version, or None when the image has no saved version yet.
    name : str
        What the markers are of, for the message (e.g. ``"image 'wbc_090'"``).

    Returns
    -------
    bool
        True when a new version is due; False when ``markers`` equal ``previous`` (nothing to
        write: the latest version stays the answer).

    Raises
    ------
    InputError
        ``previous`` is None and ``markers`` hold no stroke ("no strokes to save"). Erasing every
        stroke of an image that has a saved version is allowed.
    """
    array = np.asarray(markers)
    if previous is None:
        if not array.any():
            raise InputError(f"{name}: no strokes to save; draw background and object strokes first "
                             "(an image without saved markers keeps none)")
        return True
    previous = np.asarray(previous)
    return not (previous.shape == array.shape and np.array_equal(previous, array))


def _check_n_classes(n_classes) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or not 1 <= n_classes <= 254:
        raise InputError(f"n_classes: must be an integer in 1..254, got {n_classes!r}")
    return int(n_classes)


def _class(c: int, names: Sequence[str] | None) -> str:
    name = names[c - 1] if names is not None and 0 < c <= len(names) else None
    if not name or name.strip().lower() == f"class {c}":
        return f"class {c}"
    return f"class {c} {name!r}"


def _classes(classes: list[int], names: Sequence[str] | None) -> str:
    return ", ".join(_class(c, names) for c in classes)


def _objects(n_classes: int, names: Sequence[str] | None) -> str:
    if n_classes == 1:
        return f"the object ({_class(1, names)})"
    if n_classes <= 5:
        return f"at least one object class ({_classes(list(range(1, n_classes + 1)), names)})"
    return f"at least one object class (classes 1..{n_classes})"
