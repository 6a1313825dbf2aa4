import pytest

from effdet_rt.data.labels import load_label_map, write_label_map
from effdet_rt.errors import DataError


def test_label_map_round_trip_sorted_by_id(tmp_path):
    path = tmp_path / "label_map.yaml"
    write_label_map(path, {3: "Platelets", 1: "RBC", 2: "WBC"})
    assert path.read_text() == "1: RBC\n2: WBC\n3: Platelets\n"
    assert load_label_map(path) == {1: "RBC", 2: "WBC", 3: "Platelets"}
    assert list(tmp_path.iterdir()) == [path]


def test_label_map_accepts_string_ids(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("'1': cat\n'2': dog\n")
    assert load_label_map(path) == {1: "cat", 2: "dog"}


@pytest.mark.parametrize(
    "text, match",
    [
        ("[1, 2]", "expected a non-empty mapping"),
        ("0: bg\n", "positive integer"),
        ("x: cat\n", "not a category id"),
        ("1: ''\n", "non-empty class name"),
        ("1: [a\n", "not valid YAML"),
    ],
)
def test_label_map_rejects_bad_files(tmp_path, text, match):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        load_label_map(path)


def test_label_map_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match="nope.yaml: cannot read"):
        load_label_map(tmp_path / "nope.yaml")


def test_write_label_map_refuses_empty(tmp_path):
    with pytest.raises(DataError, match="empty label map"):
        write_label_map(tmp_path / "m.yaml", {})
    assert not (tmp_path / "m.yaml").exists()
