"""Leave it running: four runs of one git + DVC project on a real Prefect server, each a
challenger to the model in service, on real images (scikit-learn's digits).

1. the first run becomes champion and freezes the evaluation images (``transferpilot run
   --promote``);
2. clean new images: the challenger is promoted (``dvc repro`` + ``transferpilot promote``);
3. a batch with 30 % flipped labels: held back, the served predictor unchanged (CLI);
4. the same digits from another "scanner" (inverted, tinted): drift flagged (a deployment
   run by a worker, as the Prefect UI starts it).

The story runs once per module; each test checks what a user would after one step.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from tests.projects import BIN, copy_project, git_commit, tiny_model, use_remote, working_copy
from tests.servers import prefect, prefect_server, run_deployment

pytestmark = pytest.mark.slow

#: Per class: images of the first run, clean ones, the mislabelled batch, the new domain.
BATCHES = {"first": (0, 20), "clean": (20, 40), "flipped": (40, 65), "domain": (65, 80)}


@dataclass
class Story:
    work: Path
    api: str
    env: dict[str, str]
    said: dict[str, str] = field(default_factory=dict)  # what each step printed
    status: dict[str, str] = field(default_factory=dict)  # `dvc status` after each step
    served: dict[str, str] = field(default_factory=dict)  # sha256 of the prod predictor
    states: dict[str, str] = field(default_factory=dict)  # the flow run's final state name
    messages: list[str] = field(default_factory=list)  # what the alert webhook received
    deployed_run: str = ""  # the flow run of the deployment (step 4)


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    url: str
    messages: list[str]


def webhook_receiver() -> Receiver:
    """A webhook on a free loopback port that keeps each message posted to it."""
    messages: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            messages.append(json.loads(body or b"{}").get("text", ""))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Receiver(server, f"http://127.0.0.1:{server.server_port}/hook", messages)


def shell(args: list[str], cwd: Path, env: dict[str, str], ok: bool = True):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert not ok or result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result


def add_digits(digits: Path, dest: Path, batch: str, *, flip: float = 0.0, domain: bool = False):
    """Copy a batch of each class (a seeded shuffle of the class, so batches are alike),
    with a share of labels flipped to another class, or drawn as another scanner would."""
    lo, hi = BATCHES[batch]
    rng = np.random.default_rng(1)
    for c in range(10):
        files = sorted((digits / str(c)).glob("*.png"))
        for i in np.random.default_rng(c).permutation(len(files))[lo:hi]:
            label = c
            if rng.random() < flip:
                label = int(rng.choice([k for k in range(10) if k != c]))
            out = dest / str(label) / f"{batch}-{files[i].name}"
            out.parent.mkdir(parents=True, exist_ok=True)
            if domain:  # white strokes on dark blue become dark strokes on orange
                gray = np.asarray(Image.open(files[i]).convert("L"), dtype=np.float32)
                rgb = np.stack([255 - gray, (255 - gray) * 0.6, gray * 0.3 + 80], -1)
                Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(out)
            else:
                shutil.copy(files[i], out)


def served_sha(story: Story) -> str:
    """The bytes of the predictor in service, as `predict --model prod` gets them."""
    import dvc.api

    from transferpilot.orchestrate.registry import Registry

    champion = Registry(story.work).champion()
    assert champion is not None
    data = dvc.api.read("models/train/predictor.onnx", repo=str(story.work), rev=champion.commit,
                        mode="rb")  # fmt: skip
    return hashlib.sha256(data).hexdigest()


def last_state(api: str) -> str:
    runs = httpx.post(
        f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC", "limit": 1}
    ).json()
    return runs[0]["state"]["name"]


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, project_root: Path):
    from transferpilot.datasets import write_digits

    root = tmp_path_factory.mktemp("champion")
    digits = write_digits(root / "digits")
    with prefect_server(root / "prefect-home") as (api, env):
        work = working_copy(root / "project", project_root, {"a": 2, "b": 2})
        shutil.rmtree(work / "data" / "tiny")
        images = work / "data" / "images"
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["model"] |= tiny_model(root / "tiny.safetensors")
        params["prepare"] |= {"source": "data/images", "test_fraction": 0.3}
        params["profile"] |= {
            "probe_c_grid": [0.01], "probe_folds": 2, "kernel_c_grid": [1.0],
            "probe_max_images": 200,
        }  # fmt: skip
        params["decide"] |= {"strategy": "linear", "layer": "pre_logits", "trial_minutes": 0}
        params["train"] |= {"export": True, "c_grid": [0.01, 0.1], "cv_folds": 2}
        params["evaluate"] |= {"explain": False, "check_images": 0, "mistakes": 0}
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        add_digits(digits, images, "first")
        git_commit(work, "digits, promoted runs")
        story = Story(work, api, env)

        clock = [time.perf_counter()]

        def after(step: str, said: str) -> None:
            now = time.perf_counter()
            print(f"story: {step} took {now - clock[0]:.1f} s")  # shown by pytest -s
            clock[0] = now
            story.said[step] = said
            story.status[step] = shell(["dvc", "status"], work, env).stdout
            story.served[step] = served_sha(story)

        tp = [str(BIN)]
        hook = webhook_receiver()
        shell([*tp, "alert", hook.url], work, env)  # a message when a run ends badly
        story.messages = hook.messages
        after("first", shell([*tp, "run", "--promote"], work, env).stdout)
        story.states["first"] = last_state(api)

        add_digits(digits, images, "clean")
        shell(["dvc", "repro"], work, env)
        after("clean", shell([*tp, "promote"], work, env).stdout)

        add_digits(digits, images, "flipped", flip=0.3)
        after("flipped", shell([*tp, "run", "--promote"], work, env).stdout)
        story.states["flipped"] = last_state(api)

        add_digits(digits, images, "domain", domain=True)
        prefect(["work-pool", "create", "transferpilot", "--type", "process"], work, env)
        prefect(["--no-prompt", "deploy", "--all"], work, env)
        flow_run = run_deployment(api, env, work, "--param", "promote=true")
        story.deployed_run = flow_run
        state = httpx.get(f"{api}/flow_runs/{flow_run}").json()["state"]
        story.states["domain"] = state["name"]
        after("domain", state["message"])
        deadline = time.monotonic() + 90  # the server's automation acts on the events
        while len(hook.messages) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        yield story
        hook.server.shutdown()


def record(story: Story) -> dict:
    return json.loads((story.work / "reports" / "promotion.json").read_text())


def test_the_first_run_becomes_champion_and_freezes_its_evaluation_images(story: Story) -> None:
    said = story.said["first"]
    assert "predictor v1.0.0 is the first champion" in said, said
    holdout = (story.work / "holdout.csv").read_text().splitlines()
    assert holdout[0] == "sha256,label,path" and len(holdout) - 1 == 60  # 30 % of 20 per class
    assert story.states["first"] == "Promoted"


def test_clean_new_images_promote_the_challenger_on_the_same_images(story: Story) -> None:
    said = story.said["clean"]
    assert "predictor v2.0.0 promoted" in said and "in service: v2.0.0" in said, said
    assert "on the same 60 frozen evaluation images" in said
    assert story.served["clean"] != story.served["first"]


def test_a_mislabelled_batch_is_held_back_and_the_served_predictor_is_untouched(
    story: Story,
) -> None:
    said = story.said["flipped"]
    assert "predictor v3.0.0 not promoted" in said and "in service: v2.0.0" in said, said
    assert story.served["flipped"] == story.served["clean"]  # byte for byte
    assert story.states["flipped"] in {"ChampionKept", "DriftDetected"}


def test_images_from_another_domain_are_flagged_as_drift(story: Story) -> None:
    assert story.states["domain"] == "DriftDetected", story.said["domain"]
    done = record(story)
    assert done["drift"]["drift"] and done["drift"]["tests"]["mmd"]["detected"]
    assert done["champion"] == "v2.0.0" and not done["promoted"]
    assert "drift in" in (story.work / "reports" / "promotion.md").read_text()


def test_the_deployment_run_shows_its_tasks_artifacts_and_verdict_in_the_ui(story: Story) -> None:
    api, run_id = story.api, story.deployed_run
    run = httpx.get(f"{api}/flow_runs/{run_id}").json()
    assert run["name"].startswith("images-") and "dataset:images" in run["tags"]
    assert run["state"]["type"] == "COMPLETED" and run["state"]["name"] == "DriftDetected"
    tasks = httpx.post(
        f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}
    ).json()
    names = {t["name"] for t in tasks}
    assert names >= {"prepare", "extract", "train", "evaluate", "publish", "promote"}
    artifacts = httpx.post(
        f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
    ).json()
    by_key = {a["key"]: a for a in artifacts}
    assert {"transferpilot-decision", "transferpilot-metrics", "transferpilot-report"} <= set(
        by_key
    )
    promotion = by_key["transferpilot-promotion"]["data"]
    assert "# predictor v4.0.0: DriftDetected" in promotion and "| mmd |" in promotion


def test_runs_that_end_badly_send_the_alert_and_good_ones_do_not(story: Story) -> None:
    assert len(story.messages) == 2, story.messages  # the mislabelled batch, the drift
    assert any("ended ChampionKept" in m and "in service: v2.0.0" in m for m in story.messages)
    assert any("ended DriftDetected" in m for m in story.messages)


def test_every_step_ends_in_a_consistent_committed_workspace(story: Story) -> None:
    for step, status in story.status.items():
        assert "up to date" in status, f"{step}: {status}"
    tracked = shell(["git", "status", "--porcelain", "--untracked-files=no"], story.work,
                    story.env).stdout  # fmt: skip
    assert tracked == ""
    tags = shell(["git", "tag"], story.work, story.env).stdout.split()
    assert {f"predictor@v{n}.0.0" for n in (1, 2, 3, 4)} <= set(tags)


def test_predict_uses_the_model_in_service_and_rollback_restores_the_one_before(
    story: Story, tmp_path: Path
) -> None:
    work = copy_project(story.work, tmp_path / "project")
    image = next((work / "data" / "images" / "3").glob("first-*.png"))
    prod = shell([str(BIN), "predict", "--model", "prod", "--json", str(image)], work, story.env)
    (answer,) = json.loads(prod.stdout)
    assert answer["top"][0]["label"] in {str(c) for c in range(10)}

    back = shell([str(BIN), "rollback"], work, story.env).stdout
    assert "predictor v1.0.0" in back  # in prod before v2.0.0
    from transferpilot.orchestrate.registry import Registry

    assert Registry(work).champion().version == "v1.0.0"


def test_a_second_promote_of_the_same_run_registers_nothing(story: Story, tmp_path: Path) -> None:
    work = copy_project(story.work, tmp_path / "project")
    again = shell([str(BIN), "promote"], work, story.env).stdout
    assert "predictor v4.0.0 is this run already" in again, again
    assert "predictor@v5.0.0" not in shell(["git", "tag"], work, story.env).stdout


def test_a_damaged_champion_or_a_tag_pointing_nowhere_is_a_clear_error(
    story: Story, tmp_path: Path
) -> None:
    work = copy_project(story.work, tmp_path / "project")
    tags_before = shell(["git", "tag"], work, story.env).stdout
    shutil.rmtree(work / ".dvc" / "cache")  # the champion's files are gone
    shutil.rmtree(work / "data" / "cache" / "registry", ignore_errors=True)
    image = str(next((work / "data" / "images" / "3").glob("first-*.png")))
    failed = shell([str(BIN), "predict", "--model", "prod", image], work, story.env, ok=False)
    assert failed.returncode == 4 and "predictor v2.0.0" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr and "dvc pull" in failed.stderr
    assert shell(["git", "tag"], work, story.env).stdout == tags_before

    work = copy_project(story.work, tmp_path / "pointing-nowhere")
    first = shell(["git", "rev-list", "--max-parents=0", "HEAD"], work, story.env).stdout.strip()
    shell(["gto", "register", "predictor", first, "--version", "v9.0.0"], work, story.env)
    shell(["gto", "assign", "predictor", "--version", "v9.0.0", "--stage", "prod"], work, story.env)
    failed = shell([str(BIN), "predict", "--model", "prod", image], work, story.env, ok=False)
    assert failed.returncode == 4 and "predictor v9.0.0" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr


def test_a_changed_class_list_is_refused_before_training_and_nothing_is_registered(
    story: Story, tmp_path: Path
) -> None:
    work = copy_project(story.work, tmp_path / "project")
    (work / "data" / "images" / "nine").mkdir()
    for path in list((work / "data" / "images" / "9").glob("*.png"))[:12]:  # mirrored: new
        Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
            work / "data" / "images" / "nine" / path.name
        )
    tags_before = shell(["git", "tag"], work, story.env).stdout
    failed = shell([str(BIN), "run", "--promote"], work, story.env, ok=False)
    assert failed.returncode == 3, failed.stderr
    assert "the class list changed since champion v2.0.0 (new: nine; gone: none)" in (failed.stderr)
    assert "Running stage 'extract'" not in failed.stdout + failed.stderr  # stopped at once
    assert shell(["git", "tag"], work, story.env).stdout == tags_before


def test_git_push_and_dvc_push_carry_the_model_in_service_to_another_machine(
    story: Story, tmp_path: Path
) -> None:
    work = copy_project(story.work, tmp_path / "project")
    remote, server = tmp_path / "dvc-remote", tmp_path / "origin.git"
    use_remote(work, remote)
    shell(["dvc", "push", "--all-tags"], work, story.env)
    shell(["git", "init", "-q", "--bare", str(server)], work, story.env)
    shell(["git", "push", "-q", "--tags", str(server), "HEAD:refs/heads/main"], work, story.env)

    other = tmp_path / "other"  # another machine: a clone of the Git server, no DVC cache
    shell(["git", "clone", "-q", "--branch", "main", str(server), str(other)], tmp_path, story.env)
    use_remote(other, remote)
    image = next((work / "data" / "images" / "3").glob("first-*.png"))
    served = shell([str(BIN), "predict", "--model", "prod", "--json", str(image)], other,
                   story.env)  # fmt: skip
    here = shell([str(BIN), "predict", "--model", "prod", "--json", str(image)], work, story.env)
    assert json.loads(served.stdout)[0]["top"] == json.loads(here.stdout)[0]["top"]
    assert "v2.0.0" in shell(["gto", "show", "predictor"], other, story.env).stdout
