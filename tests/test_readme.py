"""Every command in README.md is run or checked here, so the README cannot rot: `make` targets by a dry
run, script flags against the script's own --help, each `curl` sent to a real app (models and files
swapped for tiny ones), and docker commands against the files and profiles they name."""

import base64
import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from loadtest.images import write_samples
from service.app import create_app
from service.config import Settings
from tests.service.conftest import image_bytes, wait_ready, write_rgb

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def commands() -> list[str]:
    """Command lines of the ```bash blocks, comments and `&` chains split off."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            lines += [part.strip() for part in re.split(r"\s&(?:&)?\s|\s&$", line) if part.strip()]
    return lines


def strip_env(command: str) -> tuple[dict[str, str], str]:
    env = {}
    while m := re.match(r'^([A-Z_]+)=("[^"]*"|\S+)\s+', command):
        env[m.group(1)] = m.group(2).strip('"')
        command = command[m.end() :]
    return env, command


def test_the_readme_has_commands():
    assert len(commands()) > 30


@pytest.mark.parametrize("command", [c for c in commands() if strip_env(c)[1].startswith("make ")])
def test_make_commands_exist(command):
    _, command = strip_env(command)
    result = subprocess.run(["make", "-n", *shlex.split(command)[1:]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


SCRIPTS = {
    "python export/to_onnx.py": [sys.executable, "export/to_onnx.py"],
    "python -m models.train": [sys.executable, "-m", "models.train"],
    "torchrun --nproc-per-node 2 -m models.train": [sys.executable, "-m", "models.train"],
    "python loadtest/bench.py": [sys.executable, "loadtest/bench.py"],
    "python -m service": [sys.executable, "-m", "service"],
}


def script_commands() -> list[str]:
    return [c for c in commands() if any(strip_env(c)[1].startswith(prefix) for prefix in SCRIPTS)]


@pytest.mark.parametrize("command", script_commands())
def test_script_flags_exist(command):
    _, command = strip_env(command)
    prefix = next(p for p in SCRIPTS if command.startswith(p))
    help_text = subprocess.run([*SCRIPTS[prefix], "--help"], cwd=ROOT, capture_output=True, text=True, check=True)
    for flag in re.findall(r"(?<!\S)(--[a-z][\w-]*)", command[len(prefix) :]):
        assert flag in help_text.stdout, f"{prefix} has no {flag}"


def test_every_setting_named_in_the_readme_exists():
    named = set(re.findall(r"\bSERVE_[A-Z_]+\b", README))
    assert named and named <= {f"SERVE_{name.upper()}" for name in Settings.model_fields}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    repo = tmp_path_factory.mktemp("readme")
    write_rgb(repo)
    settings = Settings(  # as the README's explicit-control example runs: unload and load answer 200 too
        model_repository=repo,
        providers=["cpu"],
        intra_op_threads=1,
        model_control="explicit",
        models=["tiny_rgb"],
        repository_token="s3cret",
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


def read_file(reference: str, samples: Path | None) -> bytes:
    """`@samples/cat.jpg` from the folder `make samples` fills (or a small PNG when none is given)."""
    if samples is None:
        return image_bytes(fmt="PNG")
    return (samples.parent / reference.lstrip("@")).read_bytes()


def curl_request(command: str, samples: Path | None = None) -> dict:
    """The request a README curl line sends, with the README's models swapped for a tiny one."""
    command = re.sub(
        r"\$\(base64 -w0 ([^)]+)\)", lambda m: base64.b64encode(read_file(m.group(1), samples)).decode(), command
    )
    args = shlex.split(command)[1:]
    request = {"method": "GET", "headers": {}, "files": [], "content": None}
    url = None
    while args:
        arg = args.pop(0)
        if arg == "-s":
            continue
        if arg == "-X":
            request["method"] = args.pop(0)
        elif arg == "-H":
            name, _, value = args.pop(0).partition(":")
            request["headers"][name.strip()] = value.strip()
        elif arg in ("--data-binary", "-d"):
            data = args.pop(0)
            request["content"] = read_file(data, samples) if data.startswith("@") else data.encode()
            request["method"] = "POST"
        elif arg == "-F":
            name, _, path = args.pop(0).partition("=")
            request["files"].append((name, (Path(path).name, read_file(path, samples), "application/octet-stream")))
            request["method"] = "POST"
        else:
            url = arg
    path = re.sub(r"^localhost:8000", "", url)
    request["url"] = re.sub(r"\b(lenet5|mobilenet_v2|resnet50)\b", "tiny_rgb", path)
    return request


def curl_commands() -> list[str]:
    return [c for c in commands() if c.startswith("curl ") and "localhost:8000" in c]


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme") / "samples"
    write_samples(folder)
    return folder


@pytest.mark.parametrize("command", curl_commands())
def test_curl_examples_get_answers(client, samples, command):
    request = curl_request(command, samples)
    response = client.request(
        request["method"],
        request["url"],
        headers=request["headers"],
        content=request["content"],
        files=request["files"] or None,
    )
    assert response.status_code == 200, response.text


def test_every_endpoint_has_a_curl_example():
    endpoints = set(re.findall(r"^\| `(?:GET|POST) (/[^`?{ ]*)", README, flags=re.M)) - {"/docs"}
    examples = {re.sub(r"\?.*", "", curl_request(c)["url"]) for c in curl_commands()}
    covered = {e for e in endpoints if any(x == e or x.startswith(e.rstrip("/") + "/") for x in examples)}
    assert endpoints and covered == endpoints, endpoints - covered


def test_docker_commands_name_real_files_and_profiles():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    profiles = {p for service in compose["services"].values() for p in service.get("profiles", [])}
    docker = [strip_env(c)[1] for c in commands() if strip_env(c)[1].startswith("docker ")]
    assert docker
    for command in docker:
        args = shlex.split(command)
        for flag, value in itertools.pairwise(args):
            if flag == "-f":
                assert (ROOT / value).is_file(), value
            if flag == "--profile":
                assert value in profiles, value
        if args[1] == "compose" and args[-2] == "up" and args[-1] != "up":
            assert args[-1] in compose["services"], args[-1]


def test_files_the_readme_points_at_exist():
    for path in set(re.findall(r"`((?:deploy|docs|loadtest|export|service|models)/[\w./-]+\.\w+)`", README)):
        assert (ROOT / path).exists(), path
    for path in re.findall(r"\]\(([\w/.-]+\.md)\)", README):
        assert (ROOT / path).is_file(), path
