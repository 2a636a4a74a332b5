from modelrepo.schema import Batching, Instances
from service.config import Settings
from service.engine.loader import effective_batching, warmup_batch_sizes


def test_settings_override_config_batching():
    defaults = Batching(max_batch_size=32, preferred_batch_sizes=(8, 16), max_queue_delay_ms=2, max_queue_size=256)
    same = effective_batching(defaults, Settings())
    assert (same.max_batch_size, same.preferred_batch_sizes, same.max_queue_delay_ms) == (32, [8, 16], 2)
    s = Settings(max_batch_size=8, preferred_batch_sizes=[], max_queue_delay_ms=0, max_queue_size=10)
    custom = effective_batching(defaults, s)
    assert (custom.max_batch_size, custom.preferred_batch_sizes, custom.max_queue_delay_ms) == (8, [], 0)
    assert custom.max_queue_size == 10


def test_a_gpu_warms_powers_of_two_the_preferred_sizes_and_the_max_a_cpu_only_one():
    defaults = Batching(max_batch_size=32, preferred_batch_sizes=(16, 8), max_queue_delay_ms=2, max_queue_size=256)
    batching = effective_batching(defaults, Settings(), on_gpu=True)
    assert warmup_batch_sizes(batching) == warmup_batch_sizes(batching, on_gpu=True) == [1, 2, 4, 8, 16, 32]
    # A max batch size raised past config.json's preferred sizes still pads to at most twice a batch.
    raised = effective_batching(defaults, Settings(max_batch_size=200, preferred_batch_sizes=[24]), on_gpu=True)
    assert warmup_batch_sizes(raised) == [1, 2, 4, 8, 16, 24, 32, 64, 128, 200]
    assert warmup_batch_sizes(effective_batching(defaults, Settings(max_batch_size=1))) == [1]
    assert warmup_batch_sizes(effective_batching(defaults, Settings()), on_gpu=False) == [1]


def test_batches_in_flight_follow_the_device_unless_set():
    defaults = Batching(max_batch_size=32, preferred_batch_sizes=(8, 16), max_queue_delay_ms=2, max_queue_size=256)
    assert effective_batching(defaults, Settings()).batches_in_flight == 1
    assert effective_batching(defaults, Settings(), on_gpu=True).batches_in_flight == 2
    assert effective_batching(defaults, Settings(batches_in_flight=3), on_gpu=False).batches_in_flight == 3


def test_the_objective_comes_from_config_json_unless_set_and_zero_turns_it_off():
    defaults = Batching(latency_slo_ms=250)
    assert effective_batching(defaults, Settings()).latency_slo_ms == 250
    assert effective_batching(defaults, Settings(latency_slo_ms=100)).latency_slo_ms == 100
    assert effective_batching(defaults, Settings(latency_slo_ms=0)).latency_slo_ms is None
    assert effective_batching(Batching(), Settings()).latency_slo_ms is None
    on = effective_batching(defaults, Settings(max_batch_size=2))
    assert warmup_batch_sizes(on, on_gpu=False) == [1, 2]  # measured for the policy, up to the max batch


def test_instances_come_from_config_json_unless_set_and_share_the_cores(monkeypatch):
    import service.engine.loader as loader

    monkeypatch.setattr(loader, "usable_cores", lambda: 8)
    defaults = Batching()
    one = effective_batching(defaults, Settings())
    assert (one.instances, one.intra_op_threads, one.batches_in_flight) == (1, 0, 1)
    two = effective_batching(defaults, Settings(), instances=Instances(count=2))
    assert (two.instances, two.intra_op_threads, two.batches_in_flight) == (2, 4, 2)
    assert effective_batching(defaults, Settings(), on_gpu=True, instances=Instances(count=2)).batches_in_flight == 4
    pinned = effective_batching(defaults, Settings(), instances=Instances(count=2, intra_op_threads=3))
    assert (pinned.instances, pinned.intra_op_threads) == (2, 3)
    overridden = effective_batching(defaults, Settings(instances=4, intra_op_threads=1), instances=Instances(count=2))
    # SERVE_INSTANCES alone shares the cores anew: config.json's threads went with its own count.
    alone = effective_batching(defaults, Settings(instances=4), instances=Instances(count=2, intra_op_threads=3))
    assert (alone.instances, alone.intra_op_threads) == (4, 2)
    assert (overridden.instances, overridden.intra_op_threads, overridden.batches_in_flight) == (4, 1, 4)
    monkeypatch.setattr(loader, "usable_cores", lambda: 2)
    assert effective_batching(defaults, Settings(instances=4)).intra_op_threads == 1  # never 0 threads


def test_a_config_tuned_on_another_machine_is_served_with_a_warning(caplog, tmp_path):
    from modelrepo.read import ModelSource
    from modelrepo.schema import Tuning
    from service.engine.instances import this_machine
    from service.engine.loader import check_tuning

    def source_of(machine: str, provider: str = "CPUExecutionProvider", sha256: str = "aaa") -> ModelSource:
        tuning = Tuning(
            version=1,
            sha256=sha256,
            machine=machine,
            provider=provider,
            onnxruntime="1",
            measured_at="now",
            latency_slo_ms=250,
            points=(),
        )
        version = type("Version", (), {"sha256": "aaa"})()
        config = type("Config", (), {"tuning": tuning, "versions": {1: version}})()
        return ModelSource("m", config, 1, tmp_path / "model.onnx", ())

    check_tuning(source_of(this_machine()), "CPUExecutionProvider")
    assert not caplog.records
    check_tuning(source_of("Another CPU, 64 cores"), "CPUExecutionProvider")
    check_tuning(source_of(this_machine(), "CUDAExecutionProvider"), "CPUExecutionProvider")
    check_tuning(source_of(this_machine(), sha256="bbb"), "CPUExecutionProvider")  # another file since
    assert [r.levelname for r in caplog.records] == ["WARNING"] * 3
    assert "Another CPU, 64 cores" in caplog.records[0].getMessage() and "make tune MODEL=m" in caplog.text
    assert "with version 1, serves version 1" in caplog.records[2].getMessage()
