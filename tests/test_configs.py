"""One config per stage: every default defined once (the CLI's flags are generated from the
configs' fields), library errors name parameters and the CLI's name flags, and nothing a caller
passes is dropped (search fits with the learning rate and batch size it is given)."""

import argparse
import dataclasses
from pathlib import Path

import pytest

import theorycraft
from theorycraft import api, configs
from theorycraft.cli import build_parser, main
from theorycraft.configs import CONFIGS, CaptureConfig, FitConfig, ScoreConfig, SearchConfig
from theorycraft.errors import ArgumentError


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _config_flags(sub: argparse.ArgumentParser):
    """(config, field, action) for each of ``sub``'s options generated from a config field."""
    for config in CONFIGS:
        known = configs.params(config)
        for dest in sub.get_default(f"flags_of_{config.__name__}") or ():
            action = next(a for a in sub._actions if a.dest == dest)
            yield config, known[dest][0], action


@pytest.mark.parametrize("name", ["capture", "infer", "score", "check", "search"])
def test_every_flag_of_a_stage_is_its_config_field_with_the_same_default(name):
    sub = _subcommands()[name]
    generated = list(_config_flags(sub))
    assert generated, name
    for config, field, action in generated:
        assert action.default == field.default, (name, action.option_strings, action.default, field.default)
        assert action.help and field.metadata["param"].help.split(" (")[0][:30].lower() in action.help.lower()
    # no option of the command restates a config field by hand: each one named like a field is generated
    names = {dest for config in CONFIGS for dest in configs.params(config)}
    made = {action.dest for _, _, action in generated}
    by_hand = {a.dest for a in sub._actions if a.option_strings and a.dest in names} - made
    own = {"check": {"limit"}}.get(name, set())  # check's --limit counts the axioms' examples: no stage's field
    assert by_hand == own, (name, by_hand)


def test_flags_parse_into_the_config_the_library_takes():
    args = build_parser().parse_args(["search", "x.yaml", "--lr", "0.02", "--batch-size", "64", "--fit", "joint",
                                      "--tries", "2", "--data-seed", "3", "--max-memory", "2G"])
    assert configs.from_args(FitConfig, args) == FitConfig(learning_rate=0.02, batch_size=64, mode="joint",
                                                           max_memory=2 * 10 ** 9)
    assert configs.from_args(SearchConfig, args) == SearchConfig(tries=2)
    assert configs.from_args(CaptureConfig, args) == CaptureConfig(seed=3)
    plain = build_parser().parse_args(["score", "runs/x"])
    assert configs.from_args(ScoreConfig, plain) == ScoreConfig()
    assert configs.from_args(ScoreConfig, build_parser().parse_args(["score", "r", "--no-splice"])).splice is False


@pytest.mark.parametrize("config, bad, said", [
    (FitConfig, {"learning_rate": -1}, "learning_rate must be a finite number > 0, got -1"),
    (FitConfig, {"mode": "jointly"}, "mode must be one of 'stagewise', 'joint', got 'jointly'"),
    (FitConfig, {"patience": 0}, "patience must be an integer >= 1, got 0"),
    (CaptureConfig, {"dtype": "int8"}, "dtype must be one of 'float32', 'float16', 'bfloat16', got 'int8'"),
    (ScoreConfig, {"splice": "no"}, "splice must be True or False, got 'no'"),
    (SearchConfig, {"judge_cache": "lots"}, "judge_cache must be a size in bytes"),
])
def test_a_config_refuses_a_value_out_of_range_naming_the_field(config, bad, said):
    with pytest.raises(ArgumentError, match="^" + said.replace("(", r"\(").replace(")", r"\)")):
        config(**bad)


def test_a_library_error_names_the_parameter_and_the_cli_names_the_flag(tmp_path, capsys):
    with pytest.raises(ArgumentError) as info:
        api.score_run(tmp_path, n=5)
    assert str(info.value).startswith("n, the data seed (data_seed) and dtype size the shifted capture: give a "
                                      "shift too (shift NAME, or texts)")
    assert main(["score", str(tmp_path), "--n", "5"]) == 2
    assert ("error: --n, the data seed (--data-seed) and --dtype size the shifted capture: give a shift too "
            "(--shift NAME, or --text and --data)") in capsys.readouterr().err
    with pytest.raises(ArgumentError, match="^seq_len sets the windows of hf: targets"):
        theorycraft.capture("builtin:superposition", ["hook_hidden"], seq_len=8, cache_dir=tmp_path)
    assert main(["capture", "builtin:superposition", "--sites", "hook_hidden", "--seq-len", "8",
                 "--cache", str(tmp_path)]) == 2
    assert "error: --seq-len sets the windows of hf: targets" in capsys.readouterr().err


def test_a_named_capture_refuses_the_data_it_would_drop(tmp_path):
    with pytest.raises(ArgumentError, match=r"^a named capture \(acts\) is its own data: leave out data_seed, dtype$"):
        theorycraft.infer("examples/superposition.yaml", "somekey", data_seed=2, dtype="float16", cache_dir=tmp_path)


def test_search_fits_with_the_learning_rate_and_batch_size_it_is_given(tmp_path, monkeypatch, at_root):
    """Every fit of a search goes through its judge: the judge is handed the caller's Adam settings."""
    import theorycraft.refine as refine

    seen = []

    class Stop(Exception):
        pass

    def judge(theory, acts, sites, config, **options):
        seen.append(config)
        raise Stop

    monkeypatch.setattr(refine, "Judge", judge)
    monkeypatch.setenv("THEORYCRAFT_DEBUG", "1")  # the CLI lets Stop through
    with pytest.raises(Stop):
        theorycraft.search("examples/superposition.yaml", learning_rate=0.02, batch_size=64, max_steps=30, n=64,
                           cache_dir=tmp_path, out_dir=tmp_path / "out", progress=False, log=lambda m: None)
    with pytest.raises(Stop):  # the command line's flags reach it too
        main(["search", "examples/superposition.yaml", "--lr", "0.05", "--batch-size", "32", "--n", "64",
              "--cache", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress"])
    assert [(c.learning_rate, c.batch_size, c.progress) for c in seen] == [(0.02, 64, False), (0.05, 32, False)]
    assert seen[0].max_steps == 30 and seen[1].max_steps == FitConfig().max_steps


def test_the_configs_page_holds_the_generated_table(at_root):
    page = Path("docs/configs.md").read_text()
    assert configs.table() in page, "regenerate it: python -m theorycraft.configs"


def test_the_library_keyword_arguments_default_to_the_configs():
    """No api function restates a config's default: its keyword for a field defaults to None
    (the config's), and its docstring names the config."""
    import inspect

    from theorycraft import api

    for function, stage in ((api.capture, CaptureConfig), (api.infer, FitConfig), (api.score_run, ScoreConfig),
                            (api.search, SearchConfig)):
        signature = inspect.signature(function)
        for dest in configs.params(stage):
            name = "seed" if (function is api.capture and dest == "data_seed") else dest
            if name in signature.parameters:
                assert signature.parameters[name].default is None, (function.__name__, name)
        assert stage.__name__ in function.__doc__
    assert {f.name for f in dataclasses.fields(FitConfig)} >= {"learning_rate", "batch_size", "mode"}


def test_check_with_a_run_refuses_the_settings_of_a_new_fit(capsys, at_root):
    with pytest.raises(ArgumentError, match=r"^n, data_seed, seq_len and max_memory are of a new fit; with run_dir "):
        api.check("examples/induction.yaml", run_dir="runs/x", max_memory="4G")
    assert main(["check", "examples/induction.yaml", "--run", "runs/x", "--data-seed", "1"]) == 2
    assert "--n, --data-seed, --seq-len and --max-memory are of a new fit; with --run" in capsys.readouterr().err


def test_a_named_capture_refuses_a_device_it_would_not_use(tmp_path, capsys, at_root):
    """With a named capture, infer and search run no forward pass: --device is refused, not dropped;
    score keeps it (its splices run the target), as a field of its own config."""
    with pytest.raises(ArgumentError, match=r"^a named capture \(acts\) is its own data: leave out device$"):
        theorycraft.infer("examples/superposition.yaml", "somekey", device="cpu", cache_dir=tmp_path)
    assert main(["infer", "examples/superposition.yaml", "--capture", "somekey", "--device", "cpu",
                 "--cache", str(tmp_path)]) == 2
    assert "--seq-len and --device (nothing runs the target)" in capsys.readouterr().err
    assert configs.from_args(ScoreConfig, build_parser().parse_args(["score", "r", "--device", "auto"])).device == "auto"


def test_score_refuses_settings_it_would_not_use(tmp_path, capsys):
    """max_memory bounds only the prequential refits, device only forward passes (splices, a
    shift's capture): given where they do nothing, they are refused before the run is read."""
    with pytest.raises(ArgumentError, match=r"^max_memory bounds the prequential code's refits: give prequential "):
        api.score_run(tmp_path, max_memory="1G")
    assert main(["score", str(tmp_path), "--max-memory", "1G"]) == 2
    assert "error: --max-memory bounds the prequential code's refits: give --prequential" in capsys.readouterr().err
    with pytest.raises(ArgumentError, match=r"^device is where the splices and a shift's capture run: with no splice \(splice\) and no shift, "):
        api.score_run(tmp_path, splice=False, device="cpu")
    assert main(["score", str(tmp_path), "--no-splice", "--device", "cpu"]) == 2
    assert "error: --device is where the splices and a shift's capture run: with no splice (--no-splice) and no --shift" in capsys.readouterr().err


def test_infer_says_the_adam_flags_did_nothing_where_every_site_is_solved_exactly(tmp_path, capsys):
    """--max-steps, --lr, --batch-size and --restarts set Adam: typed for a theory whose every site
    has a closed-form solve, they are said to have done nothing, not dropped silently."""
    theory = tmp_path / "exact.yaml"
    theory.write_text("theory: exact\ntarget: builtin:superposition\nsites:\n  x: {hook: hook_input}\n"
                      "  h: {hook: hook_hidden}\ninputs: [x]\ncomponents:\n"
                      "  embed: {kind: linear, from: x, predicts: h, bias: false}\n")
    common = [str(theory), "--n", "300", "--cache", str(tmp_path / "store"), "--out", str(tmp_path / "run")]
    assert main(["infer", *common, "--max-steps", "5", "--lr", "0.1"]) == 0
    assert "note: every site was solved in closed form, so no Adam fit ran: --max-steps, --lr did nothing" in \
        capsys.readouterr().err
    assert main(["infer", *common]) == 0
    assert "no Adam fit ran" not in capsys.readouterr().err  # nothing typed, nothing said


def test_a_bad_output_directory_names_the_parameter_beside_the_flag(tmp_path, at_root):
    from theorycraft.errors import ArtifactError

    taken = tmp_path / "a-file"
    taken.write_text("")
    with pytest.raises(ArtifactError, match=r"choose another --out \(library: out_dir\)$"):
        theorycraft.infer("examples/superposition.yaml", out_dir=taken, cache_dir=tmp_path)


def test_the_model_object_parameters_are_said_once():
    """target=, dataset= and output= are objects, no config's fields: each function that takes them
    has the one entry of theorycraft._captures.MODEL_PARAMETERS for each."""
    import inspect

    from theorycraft._captures import MODEL_PARAMETERS

    for function in (api.capture, api.infer, api.check, api.search, api.score_run):
        doc = inspect.getdoc(function)
        for name in set(MODEL_PARAMETERS) & set(inspect.signature(function).parameters):
            kind, text = MODEL_PARAMETERS[name]
            assert doc.count(f"\n{name} : ") == 1 and " ".join(text.split()[:6]) in " ".join(doc.split()), \
                (function.__name__, name)
