"""The ``transferpilot`` command: a thin adapter over the library and the stages."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from transferpilot import orchestrate
from transferpilot.errors import IO_EXIT_CODE, ConfigError, ModelError, TransferpilotError
from transferpilot.io import stdout_redirected
from transferpilot.orchestrate import offline_environment, parse_cluster

app = typer.Typer(
    name="transferpilot",
    help="Decide how to transfer an ImageNet-pretrained CNN to your images, then do it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("transferpilot")


def _stdout_for(as_json: bool) -> contextlib.AbstractContextManager[None]:
    """With ``--json``, whatever the work prints (a library, an exporter) goes to stderr:
    stdout holds exactly one JSON document."""
    return stdout_redirected(2) if as_json else contextlib.nullcontext()


ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="the parameters file")]
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="efficientnet_lite0 | timm:<name> | torchvision:<name> | file:<path>"
        " (profile also takes auto: the best of model.candidates; predict a trained"
        " predictor: <path>.onnx, or the registry's: prod | predictor@vN.0.0)",
    ),
]
ArchOpt = Annotated[str | None, typer.Option("--arch", help="architecture of a file:<path> model")]


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler()
        stamp = "" if os.environ.get("TRANSFERPILOT_LOG_TIME") == "0" else "%(asctime)s "
        handler.setFormatter(logging.Formatter(f"{stamp}%(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("transferpilot").setLevel(level)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings and errors only")] = False,
) -> None:
    _setup_logging(verbose, quiet)


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="the stage to run, e.g. prepare")],
    params_file: ParamsOpt = Path("params.yaml"),
) -> None:
    """Run one pipeline stage (what dvc.yaml calls)."""
    from transferpilot.config import load_params
    from transferpilot.stages import Paths, run_stage

    summary = run_stage(name, load_params(params_file), Paths())
    log.debug("stage %s: %s", name, json.dumps(summary, default=str))


@app.command()
def params(params_file: ParamsOpt = Path("params.yaml")) -> None:
    """Validate the parameters file and print it with every default filled in."""
    import yaml

    from transferpilot.config import load_params

    loaded = load_params(params_file)
    typer.echo(yaml.safe_dump(loaded.model_dump(mode="json"), sort_keys=False), nl=False)


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="image files")],
    model: ModelOpt = "efficientnet_lite0",
    arch: ArchOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="answers per image")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    explain: Annotated[
        bool, typer.Option("--explain", help="also write where the model looked (PNG per image)")
    ] = False,
    out: Annotated[
        Path, typer.Option("--out", help="where --explain writes (never the images' folder)")
    ] = Path("reports/explanations"),
) -> None:
    """Top-k labels for images: ImageNet's with a pretrained model as-is, or your classes
    with a trained predictor (``--model models/train/predictor.onnx``). ``--explain``
    writes each image with a heat map of where the model looked for its top answer."""
    with _stdout_for(as_json):
        model = _registered(model)
        preds = _predictions(images, model, arch, top_k, device)
        maps = _explanations(images, model, arch, device, out) if explain else {}
    if as_json:
        rows = [p.as_dict() | ({"explanation": maps[p.image]} if p.image in maps else {})
                for p in preds]  # fmt: skip
        typer.echo(json.dumps(rows, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console()
        for pred in preds:
            if pred.error:
                console.print(f"[red]{pred.image}: cannot read ({pred.error})[/red]")
                continue
            console.print(f"[bold]{pred.image}[/bold]", soft_wrap=True)
            table = Table(show_edge=False, box=None, padding=(0, 2))
            table.add_column("#", justify="right")
            table.add_column("label")
            table.add_column("prob", justify="right")
            for rank, guess in enumerate(pred.top, start=1):
                table.add_row(str(rank), guess.label, f"{guess.prob:.3f}")
            console.print(table)
            if pred.image in maps:
                console.print(f"  where it looked: {maps[pred.image]}", soft_wrap=True)
    if any(p.error for p in preds):
        raise typer.Exit(3)


def _registered(model: str) -> str:
    """``prod`` or ``predictor@vN.0.0``: the registered predictor's file; else ``model``."""
    if model == "prod" or model.startswith(("predictor@", "predictor#")):
        return str(orchestrate.registered_predictor(Path("."), model))
    return model


def _predictions(images: list[Path], model: str, arch: str | None, top_k: int, device: str):
    if model.endswith(".onnx"):
        from transferpilot.predictor import Predictor

        if not Path(model).is_file():
            raise ModelError(f"{model}: no such predictor file (the train stage writes one)")
        return Predictor(Path(model)).predict_files(images, top_k=top_k)
    from transferpilot.device import resolve_device
    from transferpilot.predict import predict_images
    from transferpilot.zoo import create_backbone

    backbone = create_backbone(model, arch=arch)
    return predict_images(backbone, images, top_k=top_k, device=resolve_device(device))


def _explanations(
    images: list[Path], model: str, arch: str | None, device: str, out: Path
) -> dict[str, str]:
    """{image: overlay PNG} of where the model looked for its top answer, written in
    ``out``; the method is logged. The images' folders, and those above them, are refused."""
    from transferpilot.device import resolve_device
    from transferpilot.explain import Explainer, write_overlays

    folder = out.resolve()
    for image in images:
        parent = image.resolve().parent
        if folder == parent or folder in parent.parents:
            raise ConfigError(
                f"--out {out} is, or holds, the folder of {image}: explanations never go "
                "next to your images; choose another folder"
            )
    if model.endswith(".onnx"):  # the trained strategy saved beside the exported predictor
        from transferpilot.stages.train import trained_strategy

        strategy = trained_strategy(Path(model).parent, arch, resolve_device(device))
        explainer = Explainer(*strategy.predictor(), strategy.classes_)
    else:
        from transferpilot.heads import NetworkClassifier
        from transferpilot.zoo import create_backbone

        backbone = create_backbone(model, arch=arch)
        module = NetworkClassifier(backbone.model, backbone.data_config)
        explainer = Explainer(module, backbone.data_config, backbone.class_names)
    log.info("explanations: %s, in %s", explainer.method, out)
    found = explainer.explain_files(images)
    written = write_overlays(found, out)
    return {str(i): str(w) for i, w in zip(images, written, strict=True) if w is not None}


@app.command()
def profile(
    data: Annotated[Path, typer.Argument(help="an image folder (or CSV manifest) to profile")],
    model: ModelOpt = "efficientnet_lite0",
    arch: ArchOpt = None,
    params_file: ParamsOpt = Path("params.yaml"),
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    sample: Annotated[
        int, typer.Option(min=0, help="images measured (stratified sample; 0 = all)")
    ] = 1000,
    remeasure: Annotated[
        bool,
        typer.Option(help="time this machine again and profile afresh (features stay cached)"),
    ] = False,
) -> None:
    """Profile a folder and decide the strategy, outside the pipeline (features are cached).

    Sizes count every image; similarity and layer probes use a stratified sample.
    Settings other than the model come from params.yaml when it exists. Asked again
    with the same images, settings and code, the result kept in profile.cache_dir is
    reused.
    """
    from transferpilot.config import Params, load_params
    from transferpilot.profile_folder import profile_folder

    params = load_params(params_file) if params_file.exists() else Params()
    params = params.model_copy(
        update={"model": params.model.model_copy(update={"name": model, "arch": arch})}
    )
    with _stdout_for(as_json):
        summary = profile_folder(data, params, sample=sample, remeasure=remeasure).summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        _print_profile(summary)


#: Skipped files listed by ``transferpilot profile`` (``--json`` has them all).
SHOWN_SKIPPED = 20


def _print_profile(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from transferpilot.decide import against, candidate_input

    console = Console()
    ipc = summary["images_per_class"]
    threshold = summary.get("similarity_threshold")
    similarity = (
        f"{summary['similarity']:.2f}"
        if threshold is None
        else against(summary["similarity"], threshold)
    )
    console.print(
        f"[bold]{summary['n_images']} images, {summary['n_classes']} classes[/bold] "
        f"(training images per class: min {ipc['min']:g}, median {ipc['median']:g}, "
        f"max {ipc['max']:g}; imbalance {summary['imbalance']:.1f})"
    )
    console.print(
        f"size [bold]{summary['size']}[/bold], similarity {similarity} → "
        f"[bold]{summary['domain']}[/bold]; quadrant [bold]{summary['quadrant']}[/bold]"
    )
    table = Table(box=None, padding=(0, 2))
    for col in ("layer", "probe acc", "KL", "overlap"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for row in summary["layers"]:
        table.add_row(
            row["layer"],
            "" if row["probe_accuracy"] is None else f"{row['probe_accuracy']:.3f}",
            "" if row["kl"] is None else f"{row['kl']:.3f}",
            "" if row["overlap"] is None else f"{row['overlap']:.2f}",
        )
    console.print(table)
    if summary.get("backbones"):
        ranking = Table(box=None, padding=(0, 2), title="backbones (model.name auto)")
        for col in ("backbone", "best layer", "probe", "k-NN", "LogME", "cost", "verdict"):
            ranking.add_column(col, justify="left" if col in ("backbone", "verdict") else "right")
        for b in summary["backbones"]:
            ranking.add_row(
                b["model"],
                b["layer"],
                f"{b['probe_accuracy']:.3f} ± {b['probe_std']:.3f}",
                f"{b['knn_accuracy']:.3f}",
                f"{b['logme']:.3f}",
                "" if b["cost_minutes"] is None else f"{b['cost_minutes']:.1f} min",
                b["verdict"],
            )
        console.print(ranking)
    candidates = Table(box=None, padding=(0, 2), title="candidates (held-in accuracy)")
    for col in ("strategy", "input", "score", "cost", "verdict"):
        candidates.add_column(col, justify="right" if col in ("score", "cost") else "left")
    for c in summary["candidates"]:
        candidates.add_row(
            c["strategy"],
            candidate_input(c),
            "" if c["score"] is None else f"{c['score']:.3f} ± {c['spread']:.3f}",
            "" if c["minutes"] is None else f"{c['minutes']:.1f} min",
            c["verdict"],
        )
    console.print(candidates)
    _print_findings(console, summary)
    console.print(f"[bold]{summary['strategy']}[/bold] on {summary['layer']}")
    console.print(summary["reason"], soft_wrap=False)
    if summary.get("reused"):
        console.print("(reused: the same images, settings and code as before; --remeasure)")


def _print_findings(console: Any, summary: dict) -> None:
    """What the intake skipped and which training images look mislabelled."""
    skipped = summary["skipped"]
    if skipped:
        console.print(f"[bold]{len(skipped)} files skipped[/bold] (as the prepare stage would):")
        for item in skipped[:SHOWN_SKIPPED]:
            console.print(f"  {item['file']}: {item['reason']}", markup=False, soft_wrap=True)
        if len(skipped) > SHOWN_SKIPPED:
            console.print(f"  ... and {len(skipped) - SHOWN_SKIPPED} more (--json lists them all)")
    issues = summary.get("label_issues")
    if issues:
        console.print(issues["words"], soft_wrap=True)
        for warning in issues["warnings"]:
            console.print(f"  note: {warning}", markup=False, soft_wrap=True)


OverrideOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set-param", "-S", help="a params.yaml override, as `dvc exp run -S`: key=value"
    ),
]
DataOpt = Annotated[
    Path | None, typer.Option("--data", help="image folder or CSV manifest (prepare.source)")
]
StrategyOpt = Annotated[
    str | None,
    typer.Option(
        "--strategy",
        help="auto | linear | svm | finetune | baseline | pretrained (decide.strategy)",
    ),
]
RunModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="the backbone (model.name)")]


#: The flow, as prefect.yaml's deployment names it: loaded from the project folder.
FLOW_ENTRYPOINT = "flows/pipeline.py:pipeline"


def _flow() -> Any:
    """The pipeline flow, loaded from ``flows/`` of the project folder the way a Prefect
    worker loads a deployment's entrypoint (``flows/`` and ``tasks/`` are project
    folders, not installed packages)."""
    if not Path(FLOW_ENTRYPOINT.split(":")[0]).is_file():
        raise ConfigError(
            f"no {FLOW_ENTRYPOINT.split(':')[0]} here: run transferpilot from the project folder"
        )
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(FLOW_ENTRYPOINT, use_placeholder_flow=False)


def _flow_parameters(
    data: Path | None,
    model: str | None,
    strategy: str | None,
    overrides: list[str] | None,
    cluster: str | None = None,
    promote: bool = False,
) -> dict:
    """The flow's parameters, from the options actually given (the cluster checked)."""

    parse_cluster(cluster)
    given = {
        "data": data,
        "model": model,
        "strategy": strategy,
        "overrides": overrides or None,
        "cluster": cluster,
        "promote": promote or None,
    }
    return {k: v for k, v in given.items() if v is not None}


PromoteOpt = Annotated[
    bool,
    typer.Option(
        "--promote",
        help="the run is a challenger: registered (GTO) and put in service only if not worse"
        " than the champion on the frozen evaluation images (promote.margin); new images"
        " checked for drift",
    ),
]
ClusterOpt = Annotated[
    str | None,
    typer.Option(
        help="extract on Dask: local:N (N worker processes here) or tcp://HOST:PORT"
        " (a running scheduler; its workers see the project, images and cache)"
    ),
]


@app.command()
def run(
    data: DataOpt = None,
    model: RunModelOpt = None,
    strategy: StrategyOpt = None,
    set_param: OverrideOpt = None,
    name: Annotated[str | None, typer.Option(help="the DVC experiment's name")] = None,
    cluster: ClusterOpt = None,
    promote: PromoteOpt = False,
) -> None:
    """Run the whole pipeline as the Prefect flow (each DVC stage a task), then print the
    headline metrics and the report's path."""

    params = _flow_parameters(data, model, strategy, set_param, cluster, promote)
    if not Path("dvc.yaml").is_file():
        raise ConfigError("no dvc.yaml here; run from the transferpilot project folder")
    # Settings and data checked before the Prefect server starts or DVC runs: a typo
    # costs a second and one line, and params.yaml is left as it was.
    orchestrate.check_run(
        Path("."),
        orchestrate.requested_overrides(
            Path("."), data, model, strategy, overrides=set_param or None
        ),
    )
    if promote:
        orchestrate.check_promotable(Path("."), set_param or [])
    result = None if params or name else _up_to_date(Path("."))
    try:
        result = result or _flow()(project=Path("."), experiment=name, **params)
    except TransferpilotError:
        raise
    except Exception as err:  # Prefect's parameter validation, and the like
        if type(err).__name__ == "ParameterTypeError":
            raise ConfigError(str(err)) from None
        raise
    typer.echo("")
    for stage, info in result["stages"].items():
        typer.echo(f"  {stage:<9} {info['status']:<8} {info['seconds']:7.1f} s")
    decision = result["decision"]
    layer = f" on {decision['layer']}" if decision.get("layer") else ""
    typer.echo(f"\nDecision: {decision['strategy']}{layer} ({decision['quadrant']})")
    experiment = result.get("experiment")
    if experiment:
        typer.echo(f"DVC experiment: {experiment}")
    typer.echo(f"Result: {result['headline']}")
    if result.get("workspace_restored"):
        typer.echo(
            f"Report: in the experiment ({result['report']} there); the workspace is as it was, "
            f"`dvc exp apply {experiment}` brings the run into it"
        )
    else:
        typer.echo(f"Report: {result['report']}  (and {result['report_html']})")
    if result.get("promotion"):
        typer.echo(f"Registry: {result['promotion']['message']}")


def _up_to_date(project: Path) -> dict[str, Any] | None:
    """What the last run left, when ``dvc status`` finds no stage to run and no Prefect
    server is configured: a temporary server's UI would end with this command, so a flow
    run of six skipped tasks would show nobody anything (a configured server gets one)."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url or not (project / "reports" / "metrics.json").is_file():
        return None
    if orchestrate.stale_stages(project):
        return None
    done = orchestrate.outcome(project)
    log.info("every stage is up to date (dvc status): no flow run, no server started")
    return {
        "stages": {
            stage: {"status": "skipped", "seconds": 0.0}
            for stage, _ in orchestrate.stage_order(project)
        },
        "decision": done.decision,
        "headline": done.headline(),
        "report": str(done.report_path),
        "report_html": str(done.report_html),
    }


@app.command()
def serve(
    cron: Annotated[str, typer.Option(help="when to run, e.g. '0 2 * * *' (02:00 daily)")],
    name: Annotated[str, typer.Option(help="the deployment's name")] = "scheduled",
    timezone: Annotated[
        str, typer.Option(help="the schedule's time zone (IANA name), shown in the UI")
    ] = "UTC",
    data: DataOpt = None,
    model: RunModelOpt = None,
    strategy: StrategyOpt = None,
    set_param: OverrideOpt = None,
    cluster: ClusterOpt = None,
    promote: PromoteOpt = False,
) -> None:
    """Serve the flow with a cron schedule: runs appear in the Prefect UI (set
    PREFECT_API_URL to your `prefect server start`). Stops with Ctrl-C."""

    params = _flow_parameters(data, model, strategy, set_param, cluster, promote)
    if promote:
        orchestrate.check_promotable(Path("."), set_param or [])
    orchestrate.check_run(
        Path("."),
        orchestrate.requested_overrides(
            Path("."), data, model, strategy, overrides=set_param or None
        ),
    )
    params["project"] = str(Path(".").resolve())
    from prefect.schedules import Cron

    typer.echo(f"schedule: {cron} ({timezone})")
    _flow().serve(name=name, schedules=[Cron(cron, timezone=timezone)], parameters=params)


@app.command()
def promote(
    force: Annotated[
        bool, typer.Option("--force", help="put this run in service even if it is worse")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Champion and challenger, after `dvc repro`: register the workspace's run (GTO) and put
    it in service if it is not worse than the champion on the frozen evaluation images."""
    done = orchestrate.promote(Path("."), force=force)
    if as_json:
        typer.echo(json.dumps(done.as_dict(), indent=2))
        return
    typer.echo(done.message())
    typer.echo("Record: reports/promotion.md; `gto show predictor` lists the versions")


@app.command()
def alert(
    url: Annotated[str, typer.Argument(help="a webhook URL (Slack's incoming webhooks, ...)")],
    on: Annotated[
        list[str] | None,
        typer.Option(help="a final state to be told of (repeatable)"),
    ] = None,
) -> None:
    """Post to a webhook when a promoted run ends DriftDetected or ChampionKept: a Prefect
    automation on your server (PREFECT_API_URL), shown under Automations in the UI."""
    from prefect.settings import get_current_settings

    from transferpilot.orchestrate.alerts import ALERT_STATES, create_alert

    if not get_current_settings().api.url:
        raise ConfigError(
            "alerts are an automation on a Prefect server: start one (`prefect server start`) "
            "and set PREFECT_API_URL first"
        )
    states = on or list(ALERT_STATES)
    automation = create_alert(url, states)
    typer.echo(
        f"automation {automation}: a promoted run ending {' or '.join(states)} posts to {url}"
    )


@app.command()
def rollback(
    version: Annotated[
        str | None, typer.Argument(help="the version to serve (default: the one before)")
    ] = None,
) -> None:
    """Put an earlier registered version back in service (GTO assigns it to prod again)."""
    target = orchestrate.rollback(Path("."), version)
    typer.echo(f"in service: predictor {target.version} ({target.commit[:8]})")


@app.command()
def models(
    name: Annotated[str | None, typer.Argument(help="show one model's details")] = None,
    arch: ArchOpt = None,
) -> None:
    """List the model zoo, or show one model's preprocessing, layers and weights."""
    from transferpilot.zoo import create_backbone, describe_named, list_models

    if name is None:  # the named models with their preprocessing, then the families
        rows = [
            (
                name,
                f"{cfg.input_size[1]} px",
                f"{cfg.interpolation}, crop {cfg.crop_pct:g} {cfg.crop_mode}",
                "mean " + ",".join(f"{m:.3g}" for m in cfg.mean),
                "std " + ",".join(f"{s:.3g}" for s in cfg.std),
                about,
            )
            for name, about, cfg in describe_named()
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for row in rows:
            typer.echo(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[5]
            )
        typer.echo("\n".join(m for m in list_models() if m not in {r[0] for r in rows}))
        return
    typer.echo(json.dumps(create_backbone(name, arch=arch).describe(), indent=2))


@app.command()
def digits(
    out: Annotated[Path, typer.Argument(help="where to write the image folder")] = Path(
        "data/digits"
    ),
) -> None:
    """Write the embedded default dataset (scikit-learn's digits) as a PNG ImageFolder."""
    from transferpilot.datasets import write_digits

    typer.echo(str(write_digits(out)))


def main() -> None:
    """Console entry point: user errors become a message and an exit code, no traceback."""

    offline_environment()
    try:
        app()
    except TransferpilotError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(err.exit_code)
    except OSError as err:  # a full disk, a read-only folder: the environment, not the input
        where = f" {err.filename}:" if err.filename else ""
        typer.secho(f"error: cannot read or write{where} {err.strerror or err}", err=True)
        sys.exit(IO_EXIT_CODE)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
