"""TEST-ONLY REFERENCE: the scoring loop of the RRC DocVQA / InfographicVQA evaluation script, for parity.

Transcribed from the RRC standalone evaluation script ("This file can be downloaded from:
https://www.docvqa.org/datasets/infographicvqa and https://rrc.cvc.uab.es/?ch=17"), functions
`levenshtein_distance` and the per-question part of `evaluate_method`. File reading, submission validation,
per-type breakdowns and printing are left out; the per-question arithmetic is kept exactly, including its
own pure-Python Levenshtein, the raw-`.upper()` denominator and the `question_result < threshold` test.
Nothing in the project imports this file; tests/test_metric_anls.py compares metrics/anls.py against it.
"""


def levenshtein_distance(s1, s2):
    if len(s1) > len(s2):
        s1, s2 = s2, s1

    distances = range(len(s1) + 1)
    for i2, c2 in enumerate(s2):
        distances_ = [i2 + 1]
        for i1, c1 in enumerate(s1):
            if c1 == c2:
                distances_.append(distances[i1])
            else:
                distances_.append(1 + min((distances[i1], distances[i1 + 1], distances_[-1])))
        distances = distances_
    return distances[-1]


def question_score(gt_answers, det_answer, anls_threshold=0.5):
    """The body of evaluate_method's loop for one gtObject / detObject pair."""
    values = []
    for answer in gt_answers:
        # preprocess both the answers - gt and prediction
        gt_answer = ' '.join(answer.strip().lower().split())
        det_answer_n = ' '.join(det_answer.strip().lower().split())

        dist = levenshtein_distance(gt_answer, det_answer_n)
        length = max(len(answer.upper()), len(det_answer.upper()))
        values.append(0.0 if length == 0 else float(dist) / float(length))

    question_result = 1 - min(values)

    if (question_result < anls_threshold):
        question_result = 0
    return question_result


def dataset_score(gt_answer_lists, det_answers, anls_threshold=0.5):
    """methodMetrics['score']: the mean of the per-question results (no excluded questions)."""
    total = 0
    for gt_answers, det_answer in zip(gt_answer_lists, det_answers):
        total += question_score(gt_answers, det_answer, anls_threshold)
    return 0 if len(gt_answer_lists) == 0 else total / len(gt_answer_lists)
