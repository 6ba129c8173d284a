"""TrainConfig: the one list of the training options, as flags and as TrainingArguments."""

from __future__ import annotations

import argparse
import dataclasses
import doctest

import pytest

from fusellm_fast import cli, pipeline
from fusellm_fast.pipeline import TrainConfig, config


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    TrainConfig.add_arguments(parser)
    return parser


def test_every_field_is_a_flag_with_the_fields_default():
    parser = train_parser()
    flags = {action.dest: action for action in parser._actions if action.dest != "help"}
    assert list(flags) == [option.name for option in dataclasses.fields(TrainConfig)]
    for option in dataclasses.fields(TrainConfig):
        assert flags[option.name].option_strings == ["--" + option.name.replace("_", "-")]
        assert flags[option.name].default == option.default
    assert TrainConfig.from_arguments(parser.parse_args([])) == TrainConfig()


def test_flags_take_the_fields_types_and_choices():
    arguments = train_parser().parse_args(
        ["--method", "avg_ce", "--lm-weight", "0.5", "--level", "token", "--block-size", "32", "--bf16",
         "--save-steps", "7", "--fsdp", "full_shard", "--resume"])
    assert TrainConfig.from_arguments(arguments) == TrainConfig(
        method="avg_ce", lm_weight=0.5, level="token", block_size=32, bf16=True, save_steps=7, fsdp="full_shard",
        resume=True)
    with pytest.raises(SystemExit):
        train_parser().parse_args(["--method", "max_ce"])
    with pytest.raises(SystemExit):
        train_parser().parse_args(["--max-steps", "many"])


def test_the_train_command_has_the_fields_flags():
    train_command = next(action for action in cli._parser()._actions
                         if isinstance(action, argparse._SubParsersAction)).choices["train"]
    arguments = train_command.parse_args(["model", "aligned", "-o", "out", "--max-steps", "5"])
    assert TrainConfig.from_arguments(arguments) == TrainConfig(max_steps=5)


def test_training_arguments_rename_fields_and_leave_out_the_stages_own():
    arguments = TrainConfig().training_arguments()
    assert arguments == {
        "method": "min_ce", "lm_weight": 0.9, "temperature": 1.0, "level": None, "tail": "renormalize",
        "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1, "learning_rate": 1e-5,
        "lr_scheduler_type": "cosine", "warmup_steps": 0.008, "weight_decay": 0.1, "adam_beta2": 0.95,
        "num_train_epochs": 1.0, "max_steps": -1, "bf16": False, "seed": 42, "logging_steps": 10,
        "dataloader_num_workers": 2, "data_seed": 42, "save_strategy": "no", "save_steps": 500,
    }
    chosen = TrainConfig(seed=3, save_steps=20, deepspeed="ds.json", fsdp="full_shard", fsdp_config="f.json")
    assert chosen.training_arguments() == arguments | {
        "seed": 3, "data_seed": 3, "save_strategy": "steps", "save_steps": 20, "deepspeed": "ds.json",
        "fsdp": "full_shard", "fsdp_config": "f.json"}


def test_training_arguments_are_accepted_by_fusion_training_arguments(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from fusellm_fast.trainer import FusionTrainingArguments

    options = TrainConfig(level="token", max_steps=3).training_arguments()
    args = FusionTrainingArguments(output_dir=str(tmp_path), report_to="none", **options)
    assert (args.level, args.max_steps, args.per_device_train_batch_size) == ("token", 3, 1)
    options = TrainConfig(method="avg_ce", ce_temperature=2.0, level="sequence").training_arguments()
    args = FusionTrainingArguments(output_dir=str(tmp_path), report_to="none", **options)
    assert (args.method, args.ce_temperature) == ("avg_ce", 2.0)


def test_train_rejects_an_option_that_is_no_field_before_reading_anything(tmp_path):
    with pytest.raises(TypeError, match="train\\(\\) got an unexpected keyword argument 'steps'"):
        pipeline.train(tmp_path / "no-model", tmp_path / "no-data", tmp_path / "out", steps=10)
    assert not (tmp_path / "out").exists()


def test_docstring_examples_run():
    results = doctest.testmod(config)
    assert results.attempted > 0 and results.failed == 0
