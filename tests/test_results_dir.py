"""A killed run's leftovers in its results dir: the temporary files of its own writes go, nothing else does."""

from effdet_rt.trainer.results_dir import remove_interrupted_writes


def test_a_resumed_run_removes_the_temporary_files_of_its_killed_writes_only(tmp_path):
    left = [".efficientdet-d0_002.edrt.k2x9_q1a.tmp", ".results.json.1egajpdk.tmp", ".loss_curve.png.abcdefgh.tmp"]
    kept = [".notes.tmp", ".data.csv.abcdefgh.tmp", ".results.json.tmp", "results.json", "efficientdet-d0_001.edrt"]
    for name in left + kept:
        (tmp_path / name).write_bytes(b"x")
    said: list[str] = []
    remove_interrupted_writes(tmp_path, said.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    assert sorted(said) == sorted([
        "removed .efficientdet-d0_002.edrt.k2x9_q1a.tmp, left by an interrupted checkpoint write",
        "removed .results.json.1egajpdk.tmp, left by an interrupted results.json write",
        "removed .loss_curve.png.abcdefgh.tmp, left by an interrupted loss_curve.png write"])
