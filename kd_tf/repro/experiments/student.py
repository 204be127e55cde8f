"""`--mode=student`: distils one method from the teacher in `--teacher_dir` (a classifier, or PTB's AWD-LSTM)."""

from __future__ import annotations

import os

import data as datasets
from kd_tf.io import read_json
from kd_tf.repro import trainers
from kd_tf.repro.config import UserError
from kd_tf.repro.experiments import register, table


@register
class Student(table.SingleModel):
    name = "student"
    rank = 3
    help = "distil one method from --teacher_dir"

    def output_dir(self, dataset: str, method: str) -> str:
        return os.path.join("runs", f"{dataset}_{method}")

    def trained_methods(self, config) -> list[str]:
        return [config.method]

    def roles(self, config) -> list[str]:
        del config
        return ["student"]

    def check(self, config, missing) -> None:
        if not config.teacher_dir:
            raise UserError("--mode=student needs --teacher_dir (a --mode=teacher output directory).")
        table.check_hierarchy(config, self.trained_methods(config))
        if not os.path.exists(os.path.join(config.teacher_dir, trainers.TEACHER_INFO)):
            missing(
                f"--teacher_dir={config.teacher_dir} holds no trained teacher "
                f"({trainers.TEACHER_FILE} and {trainers.TEACHER_INFO}); train one with --mode=teacher."
            )

    def run_classifier(self, options) -> None:
        study = table.study_of(options)
        seed = options.seeds[0]
        teacher_dir = options.config.teacher_dir
        teacher_info = read_json(os.path.join(teacher_dir, trainers.TEACHER_INFO))
        if teacher_info.get("dataset") != options.dataset:
            raise trainers.TeacherMismatchError(
                f"The teacher in --teacher_dir={teacher_dir} was trained on --dataset={teacher_info.get('dataset')}, "
                f"not --dataset={options.dataset}."
            )
        # The student sees the teacher's data; a flag given explicitly must agree with it.
        facts = datasets.facts(options.dataset)
        data_options = dict(teacher_info.get("data_options", {}))
        for key, value in {**options.data_options(), "tau": float(options.config.taus[0])}.items():
            flag_name = "taus" if key == "tau" else facts.flag_of(key)
            if key in data_options and options.config.was_set(flag_name) and data_options[key] != value:
                raise trainers.TeacherMismatchError(
                    f"The teacher in --teacher_dir={teacher_dir} was trained with {key}={data_options[key]!r}, "
                    f"but --{flag_name} asks for {value!r}."
                )
            data_options.setdefault(key, value)
        splits = study.load_splits(data_options, seed)
        teacher, _ = trainers.load_teacher(teacher_dir, options.dataset, splits.num_classes)
        study.student_train.verbose = options.keras_verbose(single_run=True)
        record = trainers.train_student(
            study,
            splits,
            data_options,
            seed,
            options.config.method,
            teacher,
            teacher_info,
            options.output_dir,
            teacher_dir=teacher_dir,
        )
        table.finish_single(options, [record], study.column_key)
