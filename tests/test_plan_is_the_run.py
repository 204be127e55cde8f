"""`--dry_run`'s plan, the `config.json` a run writes and what the run trains are one configuration."""

import json
import os

import pytest
import tiny
from absl import flags
from absl.testing import flagsaver
from runner import run_in_process

import run  # noqa: F401 (defines the flags)
from kd_tf.repro import config as run_config
from kd_tf.repro import experiments, modes, plan

SWEEPS = [mode for mode in experiments.names() if experiments.get(mode).group == "sweeps"]


def _config(argv):
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["run.py", *argv])
        return run_config.from_flags(flags.FLAGS, ["run.py", *argv])


@pytest.mark.parametrize("quick", [False, True], ids=["default", "quick"])
@pytest.mark.parametrize("mode", sorted(SWEEPS))
def test_the_plan_holds_every_value_the_sweep_trains_with(mode, quick, tmp_path):
    config = _config([f"--mode={mode}", *(["--quick"] if quick else []), f"--output_dir={tmp_path}"])
    sweep = experiments.get(mode).grid_config(modes.Run(config))  # the object the sweep trains from
    planned = plan.resolved(config)
    printed = plan.text(config, missing=[], replaces_results=False)

    def value(*path):
        entry = planned
        for key in path:
            entry = entry[key]
        return entry["value"]

    assert list(sweep.seeds) == value("seeds")
    assert f"seeds: {', '.join(map(str, sweep.seeds))} [" in printed
    for option, option_value in sweep.data_options.items():
        if option in planned["data"]:
            assert option_value == value("data", option), option
    assert sweep.student_train.batch_size == value("student", "batch_size")
    assert sweep.student_train.epochs == value("student", "epochs")
    student_options = planned["student"]["options"]
    if mode == "data_efficiency":  # one student per architecture of the grid
        assert sweep.student_model_options[config.student_model] == student_options
    else:
        assert sweep.student_model_options == student_options
    sweep_values = planned["sweep"]
    if mode == "data_efficiency":
        assert [setting["tau"] for setting in sweep.settings] == value("data", "taus")
        assert sweep.train_sizes == sweep_values["train_sizes"]["value"]
        assert sweep.student_models == sweep_values["student_models"]["value"]
        assert list(sweep.methods) == list(planned["methods"])
        assert sweep.teacher_model == value("teacher", "model")
        assert sweep.teacher_train.epochs == value("teacher", "epochs")
        assert sweep.teacher_examples == sweep_values["teacher_examples"]["value"]
        assert (sweep.student_steps, sweep.evaluations) == (
            sweep_values["student_steps"]["value"],
            sweep_values["evaluations"]["value"],
        )
    elif mode == "sweet_spot":
        assert [sweep.data_options["tau"]] == value("data", "taus")
        assert sweep.batch_sizes == sweep_values["teacher_batch_sizes"]["value"]
        assert sweep.epoch_grid == sweep_values["teacher_epoch_grid"]["value"]
        # Its teacher trains for the grid's epochs at the grid's batch sizes, and the plan says so.
        assert f"epochs = {max(sweep.epoch_grid)} (the largest of teacher_epoch_grid" in printed
        assert [sweep.method] == list(planned["methods"])
    else:
        assert sweep.taus == value("data", "taus")
        assert sweep.train_sizes == sweep_values["train_sizes"]["value"]
        assert sweep.student_widths == sweep_values["student_widths"]["value"]
        assert sweep.temperatures == sweep_values["grid_temperatures"]["value"]
        assert sweep.alphas == sweep_values["grid_alphas"]["value"]
        assert sweep.methods == list(planned["methods"])
        assert sweep.teacher_train.epochs == value("teacher", "epochs")
    for method, values in planned["methods"].items():
        assert {name: entry["value"] for name, entry in values.items()} == config.method_values(method)
    if quick:  # each value `--quick` chose says so, in the plan and in config.json
        for name in experiments.get(mode).quick:
            assert config.sources[name] == run_config.QUICK, name


def test_a_value_the_user_set_beats_quick_and_the_mode_preset(tmp_path):
    config = _config(["--mode=sweet_spot", "--quick", "--seeds=4,5", "--dim=12", f"--output_dir={tmp_path}"])
    sweep = experiments.get("sweet_spot").grid_config(modes.Run(config))
    assert sweep.seeds == [4, 5] and sweep.data_options["dim"] == 12
    assert config.sources["seeds"] == config.sources["dim"] == run_config.COMMAND_LINE
    assert sweep.batch_sizes == [32, 128]  # the rest of --quick stays


@pytest.mark.parametrize("mode", experiments.names())
def test_the_plan_says_off_for_the_teacher_cache_of_a_mode_that_distils_online(mode, tmp_path):
    config = _config([f"--mode={mode}", "--teacher_dir=/t", f"--output_dir={tmp_path}"])
    if experiments.get(mode).teacher_cache:
        assert (config.runtime.teacher_cache, config.sources["teacher_cache"]) == ("auto", run_config.DEFAULT)
    else:
        assert (config.runtime.teacher_cache, config.sources["teacher_cache"]) == ("off", run_config.PRESET)


def test_a_run_writes_its_plan_as_config_json_before_it_trains(tmp_path, monkeypatch):
    argv = [*tiny.SYNTHETIC, "--teacher_epochs=2", "--taus=0.8", "--seeds=0", "--methods=kd"]
    argv += [f"--output_dir={tmp_path / 'table'}"]
    seen = []

    def table(options):  # what is on disk when training starts
        seen.append(json.load(open(os.path.join(options.output_dir, plan.CONFIG_FILE))))
        real_table(options)

    real_table = experiments.get("table").run
    monkeypatch.setattr(experiments.get("table"), "run", table)
    run_in_process(argv)
    written = json.load(open(tmp_path / "table" / plan.CONFIG_FILE))
    assert seen == [written]
    assert written == json.loads(json.dumps(plan.resolved(_config(argv))))
    assert written["student"]["epochs"] == {"value": 2, "source": run_config.COMMAND_LINE}
    assert written["methods"]["kd"]["temperature"]["source"] == run_config.DEFAULT


@pytest.mark.slow
def test_an_unfinished_run_of_another_configuration_is_refused_naming_what_changed(tmp_path):
    output_dir = tmp_path / "table"
    argv = [*tiny.SYNTHETIC, "--teacher_epochs=2", "--taus=0.8", "--seeds=0", "--methods=kd"]
    run_in_process([*argv, f"--output_dir={output_dir}"])
    os.remove(output_dir / "results.json")  # as if stopped before its last write
    before = {path: path.stat().st_mtime_ns for path in output_dir.rglob("*") if path.is_file()}
    with pytest.raises(modes.UserError) as refused:
        run_in_process(
            [*argv, "--seeds=0,1", "--learning_rate=0.5", "--jobs=2", f"--output_dir={output_dir}"]
        )
    message = str(refused.value)
    assert "holds an unfinished run of another configuration" in message
    assert "seeds: [0] → [0, 1]" in message and "student.learning_rate: 0.003 → 0.5" in message
    assert "jobs" not in message  # how a run runs may change on resume
    assert {path: path.stat().st_mtime_ns for path in output_dir.rglob("*") if path.is_file()} == before
    run_in_process([*argv, "--jobs=2", f"--output_dir={output_dir}"])  # the same run resumes
    assert json.load(open(output_dir / "results.json"))
    os.remove(output_dir / "results.json")
    run_in_process([*argv, "--seeds=0,1", "--overwrite", f"--output_dir={output_dir}"])
    assert json.load(open(output_dir / plan.CONFIG_FILE))["seeds"]["value"] == [0, 1]
    assert {record["seed"] for record in json.load(open(output_dir / "results.json"))} == {0, 1}
