"""`--mode=teacher`: trains and saves one teacher (a classifier, or PTB's AWD-LSTM with its own loop)."""

from __future__ import annotations

import os

from kd_tf.repro import trainers
from kd_tf.repro.experiments import register, table


@register
class Teacher(table.SingleModel):
    name = "teacher"
    rank = 2
    help = "train and save a teacher"

    def output_dir(self, dataset: str, method: str) -> str:
        del method
        return os.path.join("runs", f"{dataset}_teacher")

    def roles(self, config) -> list[str]:
        del config
        return ["teacher"]

    def run_classifier(self, options) -> None:
        study = table.study_of(options)
        seed = options.seeds[0]
        data_options = {**study.data_options, **study.settings[0]}
        if options.dataset == "synthetic":
            data_options["tau"] = float(options.config.taus[0])
        splits = study.load_splits(data_options, seed)
        study.teacher_train.verbose = options.keras_verbose(single_run=True)
        record, _ = trainers.train_teacher(study.teacher, splits, data_options, seed, options.output_dir)
        table.finish_single(options, [record], study.column_key)
