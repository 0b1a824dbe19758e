//! `/v2/queue`: apps with instances waiting for a launch, and why they wait.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Ctx;
use super::error::ApiError;
use super::extract::{Params, PathArg};
use super::render::{AppEmbeds, app_json};
use crate::controller::QueueEntry;
use crate::error::AppsError;
use crate::model::PathId;

/// The order in which Marathon's offer matcher rejects offers; a reason's
/// `processed` count is what remained after the reasons before it.
const REJECTION_ORDER: &[&str] = &[
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "AgentMaintenance",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
    "DeclinedScarceResources",
];

/// `processedOffersSummary`. Agora's sentence on why the instances wait is its
/// `reason`: Marathon's clients build queue items from a fixed set of keys, and
/// this summary is the one object they keep as it is.
fn offers_summary(entry: &QueueEntry) -> Value {
    let mut reasons: Vec<(&str, u64)> = REJECTION_ORDER
        .iter()
        .map(|r| (*r, entry.rejections.get(*r).copied().unwrap_or(0)))
        .collect();
    reasons.extend(
        entry
            .rejections
            .iter()
            .filter(|(r, _)| !REJECTION_ORDER.contains(&r.as_str()))
            .map(|(r, n)| (r.as_str(), *n)),
    );
    let mut remaining = entry.processed_offers;
    let summary: Vec<Value> = reasons
        .into_iter()
        .map(|(reason, declined)| {
            let step = json!({ "reason": reason, "declined": declined, "processed": remaining });
            remaining = remaining.saturating_sub(declined);
            step
        })
        .collect();
    let mut json = json!({
        "processedOffersCount": entry.processed_offers,
        "unusedOffersCount": entry.unused_offers,
        "rejectSummaryLastOffers": summary,
    });
    if let Some(reason) = &entry.reason {
        json["reason"] = json!(reason);
    }
    json
}

/// `GET /v2/queue[?embed=lastUnusedOffers]`.
pub(crate) async fn list(State(ctx): State<Ctx>, params: Params) -> Result<Response, ApiError> {
    let last_unused_offers = params.all("embed").contains(&"lastUnusedOffers");
    let snapshot = ctx.controller.snapshot();
    let queue: Vec<Value> = snapshot
        .queue
        .iter()
        .filter_map(|(id, entry)| {
            let app = snapshot.root.apps.get(id)?;
            let mut item = json!({
                "app": app_json(app, &snapshot, AppEmbeds::default()),
                "count": entry.count,
                "delay": {
                    // Marathon counts whole seconds; round up so that 0 means "now".
                    "timeLeftSeconds": entry.delay_seconds_left.max(0.0).ceil() as i64,
                    "overdue": entry.overdue,
                },
                "since": entry.since,
                "processedOffersSummary": offers_summary(entry),
            });
            if last_unused_offers {
                // Offers are declined as they come; none are kept to show.
                item["lastUnusedOffers"] = json!([]);
            }
            Some(item)
        })
        .collect();
    Ok(Json(json!({ "queue": queue })).into_response())
}

/// `DELETE /v2/queue/{app_id}/delay`: launch without waiting out the backoff (204).
pub(crate) async fn dispatch(
    State(ctx): State<Ctx>,
    method: Method,
    PathArg(rest): PathArg<String>,
) -> Result<Response, ApiError> {
    let Some(raw) = rest.trim_end_matches('/').strip_suffix("/delay") else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Not found"));
    };
    if method != Method::DELETE {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
        ));
    }
    let not_queued = || -> ApiError {
        AppsError::NotFound(format!(
            "Application /{} not found in tasks queue.",
            raw.trim_start_matches('/')
        ))
        .into()
    };
    let id = PathId::parse(raw).map_err(|_| not_queued())?;
    if !ctx.controller.snapshot().queue.contains_key(&id) {
        return Err(not_queued());
    }
    ctx.controller.reset_delay(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
