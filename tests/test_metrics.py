import math

import numpy as np
import pytest
from scipy.stats import rankdata

from kron_transformers.metrics import load_metric, metric_path


def compute(name, config, **inputs):
    # A fresh experiment id per call: evaluate's cache files would otherwise be shared between parallel runs.
    return load_metric(name, config, experiment_id=f"{name}-{config}-{id(inputs)}").compute(**inputs)


# ----------------------------------------------------------------------------------------------- GLUE


def test_cola_matthews_correlation_by_hand():
    # TP=2 (0, 4), FP=1 (1), TN=2 (2, 3), FN=0: MCC = (2*2 - 1*0) / sqrt(3*2*3*2) = 2/3
    result = compute("glue", "cola", predictions=[1, 1, 0, 0, 1], references=[1, 0, 0, 0, 1])
    assert result == {"matthews_correlation": pytest.approx(2 / 3, abs=1e-12)}


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_mrpc_qqp_accuracy_and_f1_by_hand(task):
    # right at 0, 2, 4: accuracy 3/5; TP=2, FP=1, FN=1: precision = recall = 2/3, F1 = 2/3
    result = compute("glue", task, predictions=[1, 1, 0, 0, 1], references=[1, 0, 0, 1, 1])
    assert result == {"accuracy": pytest.approx(0.6, abs=1e-12), "f1": pytest.approx(2 / 3, abs=1e-12)}


def test_stsb_pearson_and_spearman_by_hand():
    # x - mean = (-1.5, -0.5, 0.5, 1.5), y - mean = (-1.75, 0.25, -0.75, 2.25): r = 5.5 / sqrt(5 * 8.75)
    # ranks (1, 2, 3, 4) vs (1, 3, 2, 4): sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    result = compute("glue", "stsb", predictions=[1.0, 2.0, 3.0, 4.0], references=[1.0, 3.0, 2.0, 5.0])
    assert result == {"pearson": pytest.approx(5.5 / math.sqrt(43.75), abs=1e-6), "spearmanr": pytest.approx(0.8)}


@pytest.mark.parametrize("task", ["sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "hans"])
def test_accuracy_tasks(task):
    result = compute("glue", task, predictions=[0, 2, 1, 1, 0, 2, 2, 1], references=[0, 2, 1, 0, 0, 1, 2, 1])
    assert result == {"accuracy": pytest.approx(6 / 8, abs=1e-12)}


def test_glue_on_a_random_case_against_the_formulas():
    rng = np.random.default_rng(0)
    references, predictions = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    tp = int(((predictions == 1) & (references == 1)).sum())
    tn = int(((predictions == 0) & (references == 0)).sum())
    fp = int(((predictions == 1) & (references == 0)).sum())
    fn = int(((predictions == 0) & (references == 1)).sum())
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute("glue", "cola", predictions=predictions, references=references)["matthews_correlation"] == (
        pytest.approx(mcc, abs=1e-12)
    )
    result = compute("glue", "mrpc", predictions=predictions, references=references)
    assert result["accuracy"] == pytest.approx((tp + tn) / 200, abs=1e-12)
    assert result["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)

    scores, gold = rng.normal(size=100).astype(np.float32), rng.normal(size=100).astype(np.float32)
    result = compute("glue", "stsb", predictions=scores, references=gold)
    assert result["pearson"] == pytest.approx(np.corrcoef(scores, gold)[0, 1], abs=1e-6)
    assert result["spearmanr"] == pytest.approx(np.corrcoef(rankdata(scores), rankdata(gold))[0, 1], abs=1e-6)


def test_unknown_glue_configuration_names_the_choices():
    with pytest.raises(ValueError, match=r"Unknown GLUE configuration 'sst-2'.*cola, stsb, mrpc, qqp, sst2"):
        load_metric("glue", "sst-2")


def test_unknown_metric_name():
    with pytest.raises(ValueError, match=r"Unknown metric 'bleu': the package ships glue, squad"):
        metric_path("bleu")


def test_metric_scripts_are_inside_the_package():
    import kron_transformers

    package = metric_path("glue").parents[1]
    assert package.samefile(kron_transformers.__path__[0])
    assert (metric_path("glue") / "glue.py").is_file() and (metric_path("squad") / "squad.py").is_file()


# ---------------------------------------------------------------------------------------------- SQuAD


def squad_refs(*answers):
    return [
        {"id": str(i), "answers": {"text": list(texts), "answer_start": [0] * len(texts)}}
        for i, texts in enumerate(answers)
    ]


def test_squad_normalisation():
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("squad_metric", metric_path("squad") / "squad.py")
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.normalize_answer("The  Cat, sat!") == "cat sat"
    assert module.normalize_answer("An apple a day") == "apple day"
    assert module.normalize_answer("Theatre and anthem") == "theatre and anthem"  # articles only as whole words
    assert module.normalize_answer("  \tU.S.A.\n") == "usa"


@pytest.mark.parametrize("config", [None, "v1"])
def test_squad_v1_by_hand(config):
    references = squad_refs(["Denver Broncos", "The Denver Broncos"], ["Santa Clara, California"], ["1976"])
    predictions = [
        {"id": "0", "prediction_text": "denver broncos!"},  # EM 1, F1 1
        {"id": "1", "prediction_text": "Santa Clara"},  # EM 0, P = 1, R = 2/3: F1 = 0.8
        {"id": "2", "prediction_text": "in 1976 the year"},  # tokens (in, 1976, year): P = 1/3, R = 1: F1 = 0.5
    ]
    result = compute("squad", config, predictions=predictions, references=references)
    assert result == {"exact_match": pytest.approx(100 / 3), "f1": pytest.approx(100 * (1 + 0.8 + 0.5) / 3)}


def test_squad_takes_the_max_over_gold_answers():
    # vs "cat": P = 1/2, R = 1 -> 2/3; vs "black cat sat": P = 1, R = 2/3 -> 0.8
    references = squad_refs(["cat", "black cat sat"])
    result = compute("squad", "v1", predictions=[{"id": "0", "prediction_text": "black cat"}], references=references)
    assert result == {"exact_match": 0.0, "f1": pytest.approx(80.0)}


def test_squad_v2_by_hand():
    references = squad_refs(["Paris"], [], [], ["the Eiffel Tower"], ["red wine"])
    predictions = [
        {"id": "0", "prediction_text": "paris", "no_answer_probability": 0.1},  # 1, 1
        {"id": "1", "prediction_text": "", "no_answer_probability": 0.9},  # unanswerable, abstained: 1, 1
        {"id": "2", "prediction_text": "London", "no_answer_probability": 0.3},  # unanswerable, answered: 0, 0
        {"id": "3", "prediction_text": "", "no_answer_probability": 0.8},  # answerable, abstained: 0, 0
        {"id": "4", "prediction_text": "wine", "no_answer_probability": 0.2},  # 0, P = 1, R = 1/2: 2/3
    ]
    result = compute("squad", "v2", predictions=predictions, references=references)
    expected = {
        "exact": 100 * 2 / 5,
        "f1": 100 * (1 + 1 + 0 + 0 + 2 / 3) / 5,
        "total": 5,
        "HasAns_exact": 100 / 3,
        "HasAns_f1": 100 * (1 + 0 + 2 / 3) / 3,
        "HasAns_total": 3,
        "NoAns_exact": 50.0,
        "NoAns_f1": 50.0,
        "NoAns_total": 2,
        # Thresholds, in increasing no-answer probability from "all abstain" (score 2 = the unanswerable ones):
        # exact: +1 (id 0, 0.1) = 3, +0 (id 4), -1 (id 2 answers an unanswerable), ... -> best 3 at 0.1
        "best_exact": 100 * 3 / 5,
        "best_exact_thresh": pytest.approx(0.1, abs=1e-6),
        # f1: +1 (id 0) = 3, +2/3 (id 4, 0.2) = 3.67, -1 (id 2) ... -> best 3.67 at 0.2
        "best_f1": 100 * (3 + 2 / 3) / 5,
        "best_f1_thresh": pytest.approx(0.2, abs=1e-6),
    }
    assert result == {key: pytest.approx(value) for key, value in expected.items()}

    # Above the no-answer threshold a question counts as answered "no answer": id 2 (0.3) now scores 1.
    result = compute("squad", "v2", predictions=predictions, references=references, no_answer_threshold=0.25)
    assert result["exact"] == pytest.approx(100 * 3 / 5)
    assert result["f1"] == pytest.approx(100 * (3 + 2 / 3) / 5)
    assert result["NoAns_exact"] == pytest.approx(100.0)


def test_squad_missing_prediction_is_an_error():
    with pytest.raises(ValueError, match=r"No prediction for 1 question\(s\), e.g. ids \['1'\]"):
        compute(
            "squad",
            "v1",
            predictions=[{"id": "0", "prediction_text": "a"}, {"id": "7", "prediction_text": "b"}],
            references=squad_refs(["a"], ["b"]),
        )


def test_unknown_squad_configuration():
    with pytest.raises(ValueError, match=r"Unknown SQuAD configuration 'v3': expected one of default, v1, v2"):
        load_metric("squad", "v3")
