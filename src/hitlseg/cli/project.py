"""``hitlseg project init`` and ``hitlseg project info``."""

from __future__ import annotations

from hitlseg.cli.common import print_json, progress_bar


def register(commands) -> None:
    """Add the ``project`` command and its sub-commands to the sub-parser ``commands``."""
    project = commands.add_parser("project", help="create or inspect a project folder (SQLite store + arrays)")
    actions = project.add_subparsers(dest="project_command", metavar="ACTION")
    project.set_defaults(func=lambda args: (project.print_help(), 2)[1])

    init = actions.add_parser("init", help="create a project over a folder of images or a dataset folder")
    init.add_argument("dir", help="project folder to create (must not hold a project yet)")
    source = init.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="folder of images (ids are file stems)")
    source.add_argument("--dataset", metavar="DIR", help="dataset folder (images/ masks/ markers/, or one folder per case)")
    init.add_argument("--masks", metavar="DIR", help="folder of ground-truth masks matched by stem (with --images)")
    init.add_argument("--name", help="project name (default: the folder name)")
    init.add_argument("--copy", action="store_true", help="copy images and masks into the project (default: reference them in place)")
    init.add_argument("--color", choices=("lab", "rgb", "gray"), help="how RGB images are read (default lab)")
    init.add_argument("--normalize", choices=("percentile", "minmax", "none"), help="intensity normalisation (default percentile)")
    init.add_argument("--json", action="store_true", help="print the project summary as JSON")
    init.set_defaults(func=run_init)

    info = actions.add_parser("info", help="summarise a project: images, markers, selections, models")
    info.add_argument("dir", help="project folder")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=run_info)


def run_init(args) -> int:
    from hitlseg.errors import InputError
    from hitlseg.project import Project
    from hitlseg.validate import check_output_dir

    if args.masks and not args.images:
        raise InputError("--masks goes with --images (a dataset folder brings its own masks)")
    check_output_dir(args.dir, "project folder")
    _check_image_labels(args.dataset)  # a bad labels.csv is refused before the project is created
    with progress_bar("reading headers", enabled=not args.json) as progress:
        project = Project.init(args.dir, images_dir=args.images, masks_dir=args.masks, dataset=args.dataset,
                               name=args.name, copy=args.copy, color=args.color, normalize=args.normalize,
                               progress=progress)
    with project:
        labelled = _import_image_labels(project, args.dataset)
        summary = project.info()
    if labelled:
        summary["image_labels"] = labelled
    if args.json:
        print_json(summary)
    else:
        where = "copied into the project" if summary["copied"] else "referenced in place"
        print(f"created project {summary['name']!r} in {summary['root']}: {summary['images']} images "
              f"({summary['with_masks']} with masks), {where}")
        if summary["marked"]:
            print(f"imported markers of {len(summary['marked'])} images")
        if labelled:
            print(f"imported the image-level classes of {labelled} images (labels.csv)")
    return 0


def _check_image_labels(dataset) -> None:
    from pathlib import Path

    from hitlseg.weak.labels import LABELS_FILE, read_image_labels

    if dataset and (Path(dataset) / LABELS_FILE).is_file():
        from hitlseg.dataset import Dataset

        read_image_labels(Dataset.from_folder(dataset), allow_missing=True)


def _import_image_labels(project, dataset) -> int:
    """A dataset's ``labels.csv`` (image-level classes) into the new project; how many images it labelled."""
    from pathlib import Path

    from hitlseg.weak.labels import LABELS_FILE
    from hitlseg.weak.project import import_labels_csv

    path = Path(dataset) / LABELS_FILE if dataset else None
    return import_labels_csv(project, path) if path is not None and path.is_file() else 0


def _shorten(items: list[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (f" ... (+{len(items) - limit})" if len(items) > limit else "")


def run_info(args) -> int:
    from hitlseg.project import Project

    with Project.open(args.dir) as project:
        summary = project.info()
    if args.json:
        print_json(summary)
        return 0
    print(f"project:    {summary['name']}  ({summary['root']})")
    print(f"created:    {summary['created_at']}  schema v{summary['schema_version']}")
    print(f"source:     {summary['source']}  ({'copied' if summary['copied'] else 'in place'}; "
          f"read as {summary['color']}, {summary['normalize']})")
    dims = "/".join(f"{d}D" for d in summary["dimensions"])
    print(f"images:     {summary['images']} ({dims}), {summary['with_masks']} with masks")
    marked = [f"{i} (v{v})" for i, v in summary["marked"].items()]
    print(f"marked:     {len(marked)} images, {summary['marker_versions']} versions" + (f": {_shorten(marked)}" if marked else ""))
    selections = [f"{s['round']}. {s['image_id']} ({s['source']})" for s in summary["selections"]]
    print(f"selections: {len(selections)}" + (f": {_shorten(selections)}" if selections else ""))
    models = [f"#{m['id']} {m['kind']}" for m in summary["models"]]
    print(f"models:     {len(models)}" + (f": {_shorten(models)}" if models else ""))
    runs = summary["runs"]
    print(f"runs:       {runs['running']} running, {runs['done']} done, {runs['failed']} failed")
    return 0
