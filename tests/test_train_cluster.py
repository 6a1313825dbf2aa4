"""TF_CONFIG for multi-worker training: what is read, what is refused, and the lost-worker line (no TensorFlow)."""

import json

import pytest

from effdet_rt.cli.main import run
from effdet_rt.errors import UserError
from effdet_rt.trainer.cluster import lost_worker_error, read_tf_config

TWO = {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]}


def config(cluster, task) -> dict[str, str]:
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}


def test_two_workers_worker_zero_is_the_chief():
    first = read_tf_config(config(TWO, {"type": "worker", "index": 0}))
    second = read_tf_config(config(TWO, {"type": "worker", "index": 1}))
    assert (first.num_workers, first.worker_id, first.is_chief) == (2, 0, True)
    assert (second.worker_id, second.is_chief) == (1, False)
    assert second.name() == "worker 1 at 127.0.0.1:2002"


def test_a_chief_comes_first_and_writes():
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    chief = read_tf_config(config(cluster, {"type": "chief", "index": 0}))
    worker0 = read_tf_config(config(cluster, {"type": "worker", "index": 0}))
    assert chief.num_workers == 3 and chief.is_chief
    assert (worker0.worker_id, worker0.is_chief) == (1, False)


@pytest.mark.parametrize("environ", [{}, {"TF_CONFIG": "  "},
                                     config({"worker": ["a:1"]}, {"type": "worker", "index": 0}),
                                     config({"chief": ["a:1"], "evaluator": ["b:1"]}, {"type": "chief", "index": 0})])
def test_one_training_task_is_not_a_cluster(environ):
    assert read_tf_config(environ) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("{cluster", "TF_CONFIG is not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), "has no 'cluster' object"),
    (json.dumps({"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}), "cluster.worker must be a list"),
    (json.dumps({"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}), "host:port"),
    (json.dumps({"cluster": TWO}), "has no 'task' object"),
    (json.dumps({"cluster": TWO, "task": {"type": "worker"}}), "has no 'task' object"),
    (json.dumps({"cluster": TWO, "task": {"type": "worker", "index": 2}}), "task.index 2 is out of range"),
    (json.dumps({"cluster": TWO, "task": {"type": "worker", "index": "0"}}), 'task.index "0" is out of range'),
    (json.dumps({"cluster": TWO, "task": {"type": "chief", "index": 0}}), 'task.type "chief" is not a job'),
    (json.dumps({"cluster": TWO, "task": {"type": "ps", "index": 0}}), "not a training task"),
])
def test_malformed_tf_config_names_the_variable_and_the_fix(text, expected):
    with pytest.raises(UserError) as caught:
        read_tf_config({"TF_CONFIG": text})
    message = str(caught.value)
    assert message.startswith("TF_CONFIG ") and expected in message
    assert '{"cluster": {"worker": ["host1:12345", "host2:12345"]}' in message and "unset it" in message


def test_the_cli_prints_one_error_line_and_exits_2(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("model:\n  name: efficientdet-d0\n")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": TWO, "task": {"type": "worker", "index": 5}}))
    assert run(["train", "-e", str(spec), "-r", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: TF_CONFIG task.index 5 is out of range: cluster.worker has 2 address(es)")
    assert err.count("\n") == 1
    assert not (tmp_path / "results").exists()


# Messages as TensorFlow 2.21 raised them when the peer was SIGKILLed (trimmed).
HEARTBEAT = ("Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at (most recent call last):\n"
             "Collective ops is aborted by: Error reported from /job:worker/task:0: The following tasks are unhealthy "
             "(stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed.")
REFUSED = ("{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/task:1/device:CPU:0}} "
           "Collective ops is aborted by: failed to connect to all addresses; last error: UNKNOWN: "
           "ipv4:127.0.0.1:2001: Failed to connect to remote host: Connection refused")


def test_lost_worker_is_named_from_the_heartbeat_or_the_address():
    chief = read_tf_config(config(TWO, {"type": "worker", "index": 0}))
    worker1 = read_tf_config(config(TWO, {"type": "worker", "index": 1}))
    line = str(lost_worker_error(chief, HEARTBEAT, "/runs/a"))
    assert line.startswith("worker 1 at 127.0.0.1:2002 stopped answering (TensorFlow: Collective ops is aborted by: "
                           "Error reported from")
    assert "training stopped on worker 0 at 127.0.0.1:2001" in line and "/runs/a" in line and "\n" not in line
    line = str(lost_worker_error(worker1, REFUSED, "/runs/a"))
    assert line.startswith("worker 0 at 127.0.0.1:2001 stopped answering (TensorFlow: Collective ops is aborted")
    three = read_tf_config(config({"worker": ["a:1", "b:1", "c:1"]}, {"type": "worker", "index": 0}))
    assert str(lost_worker_error(three, "Socket closed", "/r")).startswith("another worker stopped answering")
