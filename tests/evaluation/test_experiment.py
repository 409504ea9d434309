"""`class_scores`: an experiment's binary score from a model's class probabilities, without fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from covidscan.errors import DataError
from covidscan.evaluation.experiment import class_scores

PROBS = np.array([[0.1, 0.2, 0.6, 0.1], [0.5, 0.3, 0.1, 0.1]])
LABELS = ["normal", "pneumonia", "covid19", "influenza"]


def test_the_score_stays_on_the_scale_the_threshold_was_chosen_on():
    # P(covid19) as the model gives it, whatever the experiment's negatives: the card's threshold was
    # chosen on this probability, so renormalising over covid19 + normal would move cases across it
    for negative in (["normal"], ["influenza"], ["normal", "pneumonia"]):
        np.testing.assert_allclose(class_scores(PROBS, LABELS, ["covid19"], negative), [0.6, 0.1])
    np.testing.assert_allclose(class_scores(PROBS, LABELS, ["covid19", "influenza"], ["normal"]), [0.7, 0.2])
    # a case the model finds a little pneumonia-like stays below a 0.5 threshold in a covid19-vs-normal experiment
    assert class_scores(np.array([[0.05, 0.6, 0.3, 0.05]]), LABELS, ["covid19"], ["normal"])[0] < 0.5


def test_a_model_without_one_of_the_experiments_classes_is_refused():
    # experiment C (covid19 vs influenza) with a three-class model that never saw influenza
    with pytest.raises(DataError, match="influenza") as err:
        class_scores(PROBS[:, :3], LABELS[:3], ["covid19"], ["influenza"])
    assert "['normal', 'pneumonia', 'covid19']" in str(err.value)  # the model's outputs are named
    assert "['covid19', 'influenza']" in str(err.value)  # and the experiment's classes
    with pytest.raises(DataError, match="pneumonia"):  # one missing negative of several
        class_scores(np.array([[0.3, 0.7]]), ["normal", "covid19"], ["covid19"], ["normal", "pneumonia"])
    with pytest.raises(DataError, match="covid19"):
        class_scores(PROBS[:, :2], LABELS[:2], ["covid19"], ["normal"])


def test_explicit_binary_models():
    p = np.array([[0.3, 0.7], [0.9, 0.1]])
    np.testing.assert_allclose(class_scores(p, ["class_0", "class_1"], ["covid19"], ["normal", "pneumonia"]), [0.7, 0.1])
    np.testing.assert_allclose(class_scores(p, ["non-covid19", "covid19"], ["covid19"], ["normal", "pneumonia"]), [0.7, 0.1])
    np.testing.assert_allclose(class_scores(p[:, ::-1], ["covid19", "non-covid19"], ["covid19"], ["normal"]), [0.7, 0.1])
    with pytest.raises(DataError):  # a generic three-output model is not an explicit binary model
        class_scores(np.array([[0.2, 0.3, 0.5]]), ["class_0", "class_1", "class_2"], ["covid19"], ["normal"])
    with pytest.raises(DataError):  # the complement of another class does not cover this experiment
        class_scores(p, ["non-influenza", "influenza"], ["covid19"], ["normal"])
