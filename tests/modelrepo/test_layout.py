import pytest

from modelrepo.layout import RepositoryError, is_model_name, model_dir, version_file


@pytest.mark.parametrize("name", ["resnet50", "vit_b_16", "m-1.2", "A"])
def test_model_names_that_are_paths_of_one_folder(tmp_path, name):
    assert is_model_name(name) and model_dir(tmp_path, name) == tmp_path / name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../etc", "a/b", "a\\b", ".hidden", "_x", "a..b", "x" * 129, "a b", "é"]
)
def test_names_that_could_leave_the_repository_or_hide_are_refused(tmp_path, name):
    assert not is_model_name(name)
    with pytest.raises(RepositoryError, match="not a valid model name"):
        model_dir(tmp_path, name)


def test_version_files():
    assert version_file(3) == "3/model.onnx"
    with pytest.raises(RepositoryError, match="from 1"):
        version_file(0)
