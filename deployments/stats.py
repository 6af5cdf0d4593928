"""Experiment and shadow statistics across workers: flush counters, take feedback, report."""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from deployments.models import Feedback, PredictionLog, StatCounter
from extensions import db
from serving.errors import InvalidInput, ServingError
from serving.service import InferenceService
from serving.stats import latency_percentile_ms, two_proportion_p_value, wilson_interval


class UnknownRequest(ServingError):
    status = HTTPStatus.NOT_FOUND
    code = "unknown_request"


def flush(service: InferenceService) -> None:
    """Add this process's counters and prediction records to the shared tables."""
    counts, records = service.stats.drain()
    if not counts and not records:
        return
    table = StatCounter.__table__
    for key, amount in counts.items():
        insert = (
            sqlite.insert(table) if db.engine.dialect.name == "sqlite" else postgresql.insert(table)
        )
        values = {
            "model": key.model,
            "experiment": key.experiment,
            "variant": key.variant,
            "metric": key.metric,
            "value": amount,
        }
        db.session.execute(
            insert.values(**values).on_conflict_do_update(
                index_elements=["model", "experiment", "variant", "metric"],
                set_={"value": table.c.value + amount},
            )
        )
    for record in records:
        db.session.merge(
            PredictionLog(
                request_id=record.request_id,
                model=record.model,
                experiment=record.experiment,
                variant=record.variant,
                version=record.version,
                label=record.label,
            )
        )
    db.session.commit()


def add_feedback(request_id: str, label: str | None, reward: float | None) -> dict[str, Any]:
    if label is None and reward is None:
        raise InvalidInput("send the true 'label' or a 'reward'")
    logged = db.session.get(PredictionLog, request_id)
    if logged is None:
        raise UnknownRequest(
            f"no experiment request '{request_id}' (feedback is taken for requests that an "
            "experiment routed, about a second after their answer)"
        )
    correct = None if label is None or logged.label is None else logged.label == label
    db.session.merge(
        Feedback(request_id=request_id, true_label=label, correct=correct, reward=reward)
    )
    db.session.commit()
    return {"request_id": request_id, "variant": logged.variant, "correct": correct}


def _counters(model: str) -> dict[tuple[str, str], dict[str, int]]:
    rows = db.session.execute(
        sa.select(
            StatCounter.experiment, StatCounter.variant, StatCounter.metric, StatCounter.value
        ).where(StatCounter.model == model)
    ).all()
    grouped: dict[tuple[str, str], dict[str, int]] = {}
    for experiment, variant, metric, value in rows:
        grouped.setdefault((experiment, variant), {})[metric] = int(value)
    return grouped


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def report(model: str, experiment: str | None) -> dict[str, Any]:
    """Per variant: traffic, errors, latency percentiles, labels, feedback accuracy with a
    95 % interval; a two-proportion test between the first two variants; shadow agreement."""
    counters = _counters(model)
    feedback_rows = db.session.execute(
        sa.select(PredictionLog.variant, Feedback.correct, Feedback.reward)
        .join(Feedback, Feedback.request_id == PredictionLog.request_id)
        .where(PredictionLog.model == model, PredictionLog.experiment == (experiment or ""))
    ).all()
    variants: dict[str, dict[str, Any]] = {}
    for (name, variant), metrics in counters.items():
        if experiment is None or name != experiment:
            continue
        buckets = {
            int(m.split(":")[1]): v for m, v in metrics.items() if m.startswith("latency_bucket:")
        }
        requests = metrics.get("requests", 0)
        variants[variant] = {
            "requests": requests,
            "errors": metrics.get("errors", 0),
            "error_rate": metrics.get("errors", 0) / requests if requests else None,
            "latency_ms": {
                f"p{q}": _finite(latency_percentile_ms(buckets, q / 100)) for q in (50, 95, 99)
            },
            "labels": {m.split(":", 1)[1]: v for m, v in metrics.items() if m.startswith("label:")},
        }
    for variant, stats in variants.items():
        judged = [c for v, c, _ in feedback_rows if v == variant and c is not None]
        rewards = [r for v, _, r in feedback_rows if v == variant and r is not None]
        interval = wilson_interval(sum(judged), len(judged))
        stats["feedback"] = {
            "n": len(judged),
            "accuracy": sum(judged) / len(judged) if judged else None,
            "accuracy_ci95": list(interval) if interval else None,
            "rewards": len(rewards),
            "mean_reward": sum(rewards) / len(rewards) if rewards else None,
        }
    names = sorted(variants)
    comparison = None
    if len(names) >= 2:
        a, b = (variants[n]["feedback"] for n in names[:2])
        successes = [round((f["accuracy"] or 0) * f["n"]) for f in (a, b)]
        comparison = {
            "variants": names[:2],
            "test": "two-proportion z-test on feedback accuracy, two-sided",
            "p_value": two_proportion_p_value(successes[0], a["n"], successes[1], b["n"]),
        }
    shadows = {}
    for (name, _), metrics in counters.items():
        if name.startswith("shadow:"):
            compared = metrics.get("compared", 0)
            shadows[name.removeprefix("shadow:")] = {
                "compared": compared,
                "errors": metrics.get("errors", 0),
                "dropped": metrics.get("dropped", 0),
                "top1_agreement": metrics.get("agreed", 0) / compared if compared else None,
                "mean_abs_score_diff": (
                    metrics.get("score_diff_micro", 0) / 1_000_000 / compared if compared else None
                ),
            }
    return {
        "model": model,
        "experiment": experiment,
        "variants": variants,
        "comparison": comparison,
        "shadows": shadows,
    }
