import shutil

import pytest
from pydantic import ValidationError

from modelrepo.layout import RepositoryError
from modelrepo.read import available_versions, read_config
from modelrepo.schema import ModelConfig
from modelrepo.versions import VersionPolicy
from modelrepo.write import write_config
from tests.service.conftest import write_rgb


@pytest.mark.parametrize(
    ("text", "available", "served"),
    [
        ("latest", [1, 2, 3], [3]),
        ("latest:2", [3, 1, 2], [2, 3]),
        ("latest:5", [1, 2], [1, 2]),
        ("all", [2, 1], [1, 2]),
        ("specific:1,3", [1, 2, 3], [1, 3]),
        ("specific:4", [1, 2, 3], []),
        ("latest", [], []),
    ],
)
def test_a_policy_selects_the_versions_triton_would(text, available, served):
    assert VersionPolicy.parse(text).select(available) == served


@pytest.mark.parametrize("text", ["latest", "latest:2", "all", "specific:1,3", " latest:1 "])
def test_a_policy_reads_back_as_it_prints(text):
    policy = VersionPolicy.parse(text)
    assert VersionPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize(
    "text", ["", "newest", "latest:0", "latest:-1", "latest:x", "specific:", "specific:0", "all:2"]
)
def test_a_policy_that_is_none_is_refused_by_name(text):
    with pytest.raises(ValueError, match="is not a version policy"):
        VersionPolicy.parse(text)


def test_config_json_checks_and_normalizes_its_policy(tmp_path):
    config = read_config(write_rgb(tmp_path))
    assert config.version_policy == "latest:1"  # what export writes when nothing says otherwise
    data = config.model_dump()
    assert ModelConfig.model_validate({**data, "version_policy": "latest"}).version_policy == "latest:1"
    with pytest.raises(ValidationError, match="not a version policy"):
        ModelConfig.model_validate({**data, "version_policy": "newest"})


def test_available_versions_are_those_listed_whose_file_is_there(tmp_path):
    folder = write_rgb(tmp_path, versions=(1, 2, 3))
    config, available = available_versions(tmp_path, "tiny_rgb")
    assert sorted(available) == [1, 2, 3] and config.name == "tiny_rgb"
    shutil.rmtree(folder / "2")  # rolling a version back is removing its folder
    assert sorted(available_versions(tmp_path, "tiny_rgb")[1]) == [1, 3]


def test_a_fingerprint_changes_when_a_version_is_rewritten(tmp_path):
    write_rgb(tmp_path, versions=(1, 2))
    before = available_versions(tmp_path, "tiny_rgb")[1]
    write_rgb(tmp_path, versions=(2,))  # export --version 2 again
    after = available_versions(tmp_path, "tiny_rgb")[1]
    assert after[1] == before[1] and after[2] != before[2]


def test_a_re_export_keeps_the_users_policy(tmp_path):
    config = read_config(write_rgb(tmp_path))
    write_config(tmp_path, config.model_copy(update={"version_policy": "latest:2"}))
    write_rgb(tmp_path, versions=(2,))
    assert read_config(tmp_path / "tiny_rgb").version_policy == "latest:2"


def test_a_model_that_is_not_there_has_no_versions(tmp_path):
    with pytest.raises(RepositoryError, match="is not in the repository"):
        available_versions(tmp_path, "absent")
