"""The quality experiments (benchmarks/quality) end to end in --smoke mode, and their resumability.

The smoke runs use the real tokenizers and real text (tiny subsets) with tiny random teachers and a few steps: the
checks are on what the scripts write (every student present, budgets consistent, numbers finite, sizes matched as
documented) and on resuming, not on the numbers themselves.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments


QUALITY = Path(__file__).resolve().parents[1] / "benchmarks" / "quality"
sys.path.insert(0, str(QUALITY))

import bert_sentiment  # noqa: E402
import common  # noqa: E402
import gpt2_news  # noqa: E402


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The scripts set torch's thread count for their run; later tests get the count they started with."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def fetch_assets_or_skip(*fetchers):
    try:
        for fetch in fetchers:
            fetch()
    except OSError as error:  # the package index is unreachable
        pytest.skip(f"real assets unavailable: {error}")


def check_budget(budget, steps, batch_size):
    assert budget["steps"] == steps
    assert budget["batch_size"] == batch_size
    assert budget["examples_seen"] == steps * batch_size
    assert math.isfinite(budget["wall_seconds"]) and budget["wall_seconds"] >= 0


def check_outputs(results_dir: Path, name: str) -> dict:
    for suffix in ("json", "md", "png"):
        path = results_dir / f"{name}.{suffix}"
        assert path.is_file() and path.stat().st_size > 0, f"{path} was not written"
    assert (results_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads((results_dir / f"{name}.json").read_text())


@pytest.mark.real_assets
def test_bert_sentiment_smoke(tmp_path):
    from kron_transformers import assets

    fetch_assets_or_skip(assets.minilm_path, assets.rotten_tomatoes_path, assets.news_articles_path)
    # One compression ratio keeps the test under a minute on 2 cores; the other runs the same code.
    argv = ["--smoke", "--compressions", "4", "--cache_dir", str(tmp_path / "cache"),
            "--results_dir", str(tmp_path / "results")]
    payload = bert_sentiment.main(argv)
    saved = check_outputs(tmp_path / "results", "bert_sentiment")
    assert (tmp_path / "results" / "bert_sentiment_lengths.png").stat().st_size > 0  # fidelity by input length
    assert saved["students"] == json.loads(json.dumps(payload["students"]))
    args = bert_sentiment.parse_args(argv)

    teacher = saved["teacher"]
    check_budget(teacher["budget"], args.teacher_steps, args.batch_size)
    assert 0 <= teacher["metrics"]["accuracy"] <= 1

    students = {(s["variant"], s["ratio"]): s for s in saved["students"]}
    assert set(students) == {(v, r) for v in bert_sentiment.VARIANTS for r in args.compressions}
    markdown = (tmp_path / "results" / "bert_sentiment.md").read_text()
    for (variant, ratio), student in students.items():
        assert bert_sentiment.VARIANT_LABELS[variant] in markdown
        assert 0 <= student["accuracy"] <= 1 and math.isfinite(saved["retained"][student["name"]])
        assert 0 < student["parameters"] < teacher["parameters"]
        stages = student["stages"]
        if variant == "kronecker_no_stage1":
            assert set(stages) == {"stage2"}
            check_budget(stages["stage2"]["budget"], args.stage1_steps + args.stage2_steps, args.batch_size)
        else:
            assert set(stages) == {"stage1", "stage2"}
            # Stage 1: its own batch of mixed-length news blocks; stage 2: the task batch.
            check_budget(stages["stage1"]["budget"], args.stage1_steps, args.stage1_batch_size)
            check_budget(stages["stage2"]["budget"], args.stage2_steps, args.batch_size)
            assert stages["stage1"]["loss_weights"]["alpha_logits"] == 0
            assert stages["stage1"]["data"] == f"news blocks of {args.stage1_min_seq_len}-{args.stage1_seq_len} tokens"
        # Same total step budget for every student.
        assert student["budget"]["steps"] == args.stage1_steps + args.stage2_steps
        assert math.isfinite(stages["stage2"]["train_loss_last"])

    # The stage-1 news blocks: one per stage-1 example, lengths drawn between the two bounds.
    blocks = bert_sentiment.news_blocks(args, bert_sentiment.load_tokenizer(args))
    lengths = [len(ids) for ids in blocks["input_ids"]]
    assert len(lengths) == args.stage1_steps * args.stage1_batch_size
    assert all(args.stage1_min_seq_len <= n <= args.stage1_seq_len for n in lengths) and len(set(lengths)) > 1

    vocab, hidden = 30522, 48  # MiniLM's vocabulary; the smoke teacher's width
    for ratio in args.compressions:
        kronecker = students[("kronecker", ratio)]["parameters"]
        assert students[("kronecker_no_stage1", ratio)]["parameters"] == kronecker
        assert students[("kronecker_random_init", ratio)]["parameters"] == kronecker
        # The DistilBERT-style rank is the largest that fits the Kronecker student's size.
        distil = students[("distilbert", ratio)]
        assert kronecker - (vocab + hidden) < distil["parameters"] <= kronecker
        assert distil["embedding_rank"] >= args.min_embedding_rank

    # The TinyBERT-style student carries a width projection from stage 1 into stage 2.
    tiny_dir = args.cache_dir / "students" / bert_sentiment.student_name("tinybert", args.compressions[0])
    assert (tiny_dir / "stage1" / common.PROJECTION_FILE).is_file()
    for stage_dir in (args.cache_dir / "students").glob("*/stage*"):
        assert common.stage_is_done(stage_dir) and not list(stage_dir.glob("checkpoint-*"))

    # A second run trains nothing and reports the same figures from the cache.
    again = bert_sentiment.main(argv)
    assert again["students"] == payload["students"] and again["teacher"]["metrics"] == teacher["metrics"]
    # Other budgets in the same cache would mix results: refused.
    with pytest.raises(ValueError, match="stage2_steps: 2 then, 3 now"):
        bert_sentiment.main([*argv, "--stage2_steps", "3"])


@pytest.mark.real_assets
def test_bert_sentiment_stage2_on_long_inputs(tmp_path):
    """--stage2_joined_examples / --stage2_news_blocks: stage 2 sees the snippets, long same-label joined snippets
    (labelled) and news blocks (label -100), of --task_max_len to --stage1_seq_len tokens, batched by length."""
    from kron_transformers import assets

    fetch_assets_or_skip(assets.minilm_path, assets.rotten_tomatoes_path, assets.news_articles_path)
    argv = ["--smoke", "--cache_dir", str(tmp_path / "cache"), "--stage2_joined_examples", "12",
            "--stage2_news_blocks", "7", "--task_max_len", "16", "--stage1_seq_len", "48"]
    args = bert_sentiment.parse_args(argv)
    data = bert_sentiment.prepare_data(args, news=False)
    train, stage2 = data["train"], data["stage2"]
    assert len(stage2) == len(train) + 12 + 7
    assert stage2[: len(train)]["input_ids"] == train["input_ids"]  # the snippets first, unchanged
    added = stage2.select(range(len(train), len(stage2)))
    labels = added["labels"]
    assert set(labels[:12]) <= {0, 1} and labels[12:] == [-100] * 7
    lengths = [len(ids) for ids in added["input_ids"]]
    assert all(16 <= n <= 48 for n in lengths) and max(lengths) > 16
    assert all(mask == [1] * len(ids) for ids, mask in zip(added["input_ids"], added["attention_mask"]))
    cls, sep = data["tokenizer"].cls_token_id, data["tokenizer"].sep_token_id
    assert all(ids[0] == cls and ids[-1] == sep for ids in added["input_ids"])
    # Joined examples are texts of their label's snippets only.
    tokens_of = {0: set(), 1: set()}
    for ids, label in zip(train["input_ids"], train["labels"]):
        tokens_of[label].update(ids)
    assert all(set(ids) <= tokens_of[label] for ids, label in zip(added["input_ids"][:12], labels[:12]))
    assert "12 joined same-label snippets + 7 unlabelled news blocks (16-48 tokens)" in (
        bert_sentiment.stage2_description(args))
    assert bert_sentiment.long_stage2_data(args)
    assert not bert_sentiment.long_stage2_data(bert_sentiment.parse_args(["--smoke"]))
    with pytest.raises(SystemExit):
        bert_sentiment.parse_args(["--smoke", "--stage2_news_blocks", "-1"])


@pytest.mark.real_assets
def test_gpt2_news_smoke(tmp_path):
    from kron_transformers import assets

    fetch_assets_or_skip(assets.gpt2_tiktoken_path, assets.news_articles_path)
    argv = ["--smoke", "--cache_dir", str(tmp_path / "cache"), "--results_dir", str(tmp_path / "results")]
    payload = gpt2_news.main(argv)
    saved = check_outputs(tmp_path / "results", "gpt2_news")
    args = gpt2_news.parse_args(argv)
    assert saved["students"] == json.loads(json.dumps(payload["students"]))

    teacher = saved["teacher"]
    check_budget(teacher["budget"], args.teacher_steps, args.batch_size)
    assert teacher["metrics"]["tokens"] == args.eval_blocks * (args.block_size - 1)
    # A random 50,257-way model after 3 steps: perplexity near the vocabulary size, and finite.
    assert 1 < teacher["metrics"]["perplexity"] < 1e6

    students = {s["name"]: s for s in saved["students"]}
    assert set(students) == set(gpt2_news.STUDENTS)
    for student in students.values():
        check_budget(student["budget"], args.student_steps, args.batch_size)
        assert 1 < student["metrics"]["perplexity"] < 1e6
        assert 0 < student["parameters"] < teacher["parameters"]
        assert student["loss_weights"]["attention_loss"] == "kl"
    # The equal-size Kronecker student matches DistilGPT2-style to within the factors' rounding; the paper's recipe is
    # smaller (the embedding dominates a small GPT-2).
    distil = students["distilgpt2"]["parameters"]
    assert abs(students["kngpt2_all_layers"]["parameters"] - distil) / distil < 0.02
    assert students["kngpt2"]["parameters"] < distil


@pytest.mark.real_assets
def test_smollm2_news_smoke(tmp_path):
    import smollm2_news

    from kron_transformers import assets

    fetch_assets_or_skip(assets.smollm2_path, assets.news_articles_path)
    argv = ["--smoke", "--cache_dir", str(tmp_path / "cache"), "--results_dir", str(tmp_path / "results"),
            "--students", "kronecker_2x", "svd_2x", "layerdrop_2x", "kngpt2", "svd_kngpt2"]
    payload = smollm2_news.main(argv)
    saved = check_outputs(tmp_path / "results", "smollm2_news")
    args = smollm2_news.parse_args(argv)
    teacher = saved["teacher"]
    assert teacher["metrics"]["tokens"] == args.eval_blocks * (args.block_size - 1)
    students = {s["name"]: s for s in saved["students"]}
    assert list(students) == args.students
    for student in students.values():
        check_budget(student["budget"], args.student_steps, args.batch_size)
        assert 1 < student["metrics"]["perplexity"] < 1e6
        assert 0 < student["parameters"] < teacher["parameters"]
        assert set(student["metrics"]["continuations"]) == set(smollm2_news.PROMPTS)
        assert 1 < student["init_perplexity"] < 1e6
        assert student["loss_weights"]["loss_normalization"] == "teacher"
    # Equal size: the SVD student has the Kronecker student's parameter count to within the rank's rounding; both
    # start activation-aware (smoke: 2 calibration blocks) with their output error measured.
    kronecker, svd = students["kronecker_2x"], students["svd_2x"]
    assert abs(svd["parameters"] - kronecker["parameters"]) / kronecker["parameters"] < 0.01
    for student in (kronecker, svd):
        assert student["init"].startswith("activation-aware") and 0 <= student["init_output_error"] < 1
    assert "init_output_error" not in students["layerdrop_2x"]
    assert students["kngpt2"]["init"].startswith("activation-aware") and students["kngpt2"]["per_map_ratio"] == "kngpt2"
    assert abs(students["svd_kngpt2"]["parameters"] - students["kngpt2"]["parameters"]) / students["kngpt2"][
        "parameters"] < 0.01
    # A second run finds every student finished: same results, nothing retrained.
    again = smollm2_news.main(argv)
    assert [s["metrics"] for s in again["students"]] == [s["metrics"] for s in payload["students"]]


class _Killed(Exception):
    pass


class _KillAfter(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Killed


def _tiny_trainer(out_dir, steps, callbacks=()):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2)
    model = BertForSequenceClassification(config)
    generator = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(0, 50, (8,), generator=generator), "labels": i % 2} for i in range(32)]
    args = common.stage_arguments(TrainingArguments, out_dir, max_steps=steps, batch_size=4, learning_rate=1e-3,
                                  seed=0, save_steps=2)
    return Trainer(model=model, args=args, train_dataset=data, callbacks=list(callbacks))


def test_run_stage_resumes_a_killed_run_to_the_same_weights(tmp_path):
    reference = common.run_stage(tmp_path / "uninterrupted", lambda d: _tiny_trainer(d, 6))
    assert reference["budget"]["resumed_at_step"] is None

    killed_dir = tmp_path / "killed"
    with pytest.raises(_Killed):
        common.run_stage(killed_dir, lambda d: _tiny_trainer(d, 6, [_KillAfter(3)]))
    assert not common.stage_is_done(killed_dir)
    saved_wall = common.read_json(killed_dir / "checkpoint-2" / common.WALL_TIME_FILE)["seconds"]

    resumed = common.run_stage(killed_dir, lambda d: _tiny_trainer(d, 6))
    assert resumed["budget"]["resumed_at_step"] == 2
    assert resumed["budget"]["steps"] == 6 and resumed["budget"]["wall_seconds"] >= round(saved_wall, 1)
    expected = load_file(tmp_path / "uninterrupted" / common.WEIGHTS_FILE)
    actual = load_file(killed_dir / common.WEIGHTS_FILE)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    assert not list(killed_dir.glob("checkpoint-*"))

    # A finished stage is read from its result, never retrained.
    def fail(_):
        raise AssertionError("a finished stage was retrained")

    assert common.run_stage(killed_dir, fail) == resumed


@pytest.mark.real_assets
def test_recipe_study_smoke_measures_fidelity_and_resumes(tmp_path):
    import recipe
    from kron_transformers import assets

    fetch_assets_or_skip(assets.minilm_path, assets.rotten_tomatoes_path, assets.news_articles_path)
    argv = ["--smoke", "--cache_dir", str(tmp_path / "cache"), "--results_dir", str(tmp_path / "results"),
            "--variants", "baseline", "recipe"]
    payload = recipe.main(argv)
    saved = check_outputs(tmp_path / "results", "recipe")
    assert set(saved["variants"]) == {"baseline", "recipe"}
    settings = saved["variants"]["recipe"]
    assert settings["calibrated"] and not saved["variants"]["baseline"]["calibrated"]
    assert "--loss_normalization" in settings["stage1_flags"] and "--min_seq_length" in settings["stage1_flags"]
    for variant in payload["variants"].values():
        fidelity = variant["fidelity"]
        assert set(fidelity["long_reviews"]) == {"128", "256"}
        assert set(fidelity["news_agreement"]) == {"64", "128", "256", "512"}
        for row in fidelity["news_agreement"].values():
            assert 0 <= row["agreement"] <= 1 and row["kl"] >= 0 and row["items"] > 0
        assert 0 <= fidelity["snippets"]["student"] <= 1
    markdown = (tmp_path / "results" / "recipe.md").read_text()
    assert "joined reviews 256 tok." in markdown and "new recipe" in markdown
    # A second run finds every variant finished and only rewrites the report.
    again = recipe.main(argv)
    assert again["variants"] == payload["variants"]
    # Another student seed: its own row beside the first, the same teacher, and a row of means over the seeds.
    seeded = recipe.main([*argv[:-2], "baseline", "--student_seed", "7"])
    assert set(seeded["variants"]) == {"baseline", "baseline@seed7", "recipe"}
    assert seeded["variants"]["baseline@seed7"]["student_seed"] == 7
    assert seeded["variants"]["baseline"]["student_seed"] == 42
    assert recipe.teacher_figures(seeded["variants"]["baseline@seed7"]) == recipe.teacher_figures(
        seeded["variants"]["baseline"])
    markdown = (tmp_path / "results" / "recipe.md").read_text()
    assert "(student seed 7)" in markdown and "Across student seeds" in markdown
    # A variant that changes stage 2 alone reuses the stage 1 of the variant without the change (same seed), and
    # its stage 2 adds the joined examples at the same number of steps.
    joined = recipe.main([*argv[:-2], "mixed_lengths", "mixed_joined", "mixed_news", "--student_seed", "7"])["variants"]
    assert joined["mixed_joined@seed7"]["stage1"] == joined["mixed_lengths@seed7"]["stage1"] == "mixed_lengths-seed7"
    assert not (tmp_path / "cache" / "mixed_joined-seed7" / "stage1").exists()
    stage2 = common.read_json(tmp_path / "cache" / "mixed_joined-seed7" / "stage2" / "all_results.json")
    plain = common.read_json(tmp_path / "cache" / "mixed_lengths-seed7" / "stage2" / "all_results.json")
    assert stage2["train_samples"] == plain["train_samples"] + 1000
    states = [common.read_json(tmp_path / "cache" / name / "stage2" / "trainer_state.json")
              for name in ("mixed_joined-seed7", "mixed_lengths-seed7")]
    assert states[0]["global_step"] == states[1]["global_step"] == recipe.stage2_steps(recipe.parse_args(argv))
    # Unlabelled news blocks: the same steps again, their folder named in the summary without this machine's path.
    news = common.read_json(tmp_path / "cache" / "mixed_news-seed7" / "stage2" / "all_results.json")
    assert news["train_samples"] == plain["train_samples"] + 500
    assert joined["mixed_news@seed7"]["stage1"] == "mixed_lengths-seed7"
    assert "{data}/news_train.txt" in joined["mixed_news@seed7"]["stage2_flags"]


@pytest.mark.real_assets
def test_calibration_benchmark_smoke(tmp_path):
    import calibration
    from kron_transformers import assets

    fetch_assets_or_skip(assets.minilm_path, assets.rotten_tomatoes_path, assets.news_articles_path)
    payload = calibration.main(["--smoke", "--cache_dir", str(tmp_path / "cache"), "--results_dir",
                                str(tmp_path / "results")])
    rows = {row["method"]: row for row in payload["rows"]}
    assert set(rows) == {"nkp", "calibrated"}
    # On held-out inputs the calibrated factors reconstruct the maps' outputs better than the plain NKP.
    assert rows["calibrated"]["output_error_median"] < rows["nkp"]["output_error_median"]
    assert rows["calibrated"]["weight_error_median"] >= rows["nkp"]["weight_error_median"] - 1e-6
    assert (tmp_path / "results" / "calibration.md").is_file()


def test_activation_aware_low_rank_baseline_is_optimal_in_output_space():
    """smollm2_news's SVD baseline: whitened by calibration inputs, its rank-r map has a smaller output error than
    the plain truncated SVD on correlated inputs, beats random rank-r maps near it, and is exact at full rank."""
    import smollm2_news

    from kron_transformers.kronecker import output_error

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(12, 8, generator=generator, dtype=torch.float64)
    mixing = torch.randn(8, 8, generator=generator, dtype=torch.float64) * torch.logspace(0, -2, 8, dtype=torch.float64)
    inputs = torch.randn(256, 8, generator=generator, dtype=torch.float64) @ mixing
    moment = inputs.T @ inputs

    def effective(layer):
        return layer.up.weight @ layer.down.weight

    plain = effective(smollm2_news.LowRankLinear(weight, None, 3))
    aware_layer = smollm2_news.LowRankLinear(weight, None, 3, moment, damping=0.0)
    aware = effective(aware_layer)
    assert torch.linalg.matrix_rank(aware) == 3
    assert output_error(weight, aware, moment) < 0.7 * output_error(weight, plain, moment)
    # The output error of the whitened rank-3 map is the smallest any rank-3 map gets: perturbing it only hurts.
    for _ in range(5):
        u = aware_layer.up.weight + 1e-3 * torch.randn(12, 3, generator=generator, dtype=torch.float64)
        v = aware_layer.down.weight + 1e-3 * torch.randn(3, 8, generator=generator, dtype=torch.float64)
        assert output_error(weight, u @ v, moment) >= output_error(weight, aware, moment)
    # Full rank reproduces the map (and its bias) exactly.
    bias = torch.randn(12, generator=generator, dtype=torch.float64)
    full = smollm2_news.LowRankLinear(weight, bias, 8, moment, damping=0.0)
    x = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(full(x), x @ weight.T + bias)
