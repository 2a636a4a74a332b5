from models.zoo_table import END, README, START, markdown_table, render


def test_readme_zoo_table_is_current():
    assert render(README.read_text()) == README.read_text(), "run `python -m models.zoo_table`"


def test_table_has_a_row_per_model_with_counts():
    table = markdown_table()
    assert "| `resnet50` | 2015 | Deep Residual Learning for Image Recognition | 25,557,032 |" in table
    assert "| `lenet1989` | 1989 |" in table.splitlines()[2]  # oldest first


def test_render_only_replaces_between_markers():
    text = f"intro\n{START}\nold\n{END}\noutro\n"
    out = render(text)
    assert out.startswith("intro\n" + START) and out.endswith(END + "\noutro\n") and "old" not in out
