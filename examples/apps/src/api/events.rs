//! `/v2/events`: Marathon's event stream as server-sent events, one
//! `event: <eventType>` / `data: <json>` frame per event, filtered by
//! `event_type` (repeatable), with a `: ping` comment every 15 seconds so that
//! proxies and clients see a live connection. Each stream announces itself with
//! `event_stream_attached` and leaves with `event_stream_detached`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::Extensions;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

use super::Ctx;
use super::error::ApiError;
use super::extract::Params;
use crate::events::EventBus;

const PING_INTERVAL: Duration = Duration::from_secs(15);

/// The events of one connection; publishes `event_stream_detached` when the
/// client goes away (the response body, and with it this stream, is dropped).
struct Subscription {
    events: Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>,
    bus: EventBus,
    remote_address: String,
    /// Counts this stream among the open ones until it is dropped.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Stream for Subscription {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.as_mut().poll_next(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.publish(
            "event_stream_detached",
            json!({ "remoteAddress": self.remote_address }),
        );
    }
}

/// `GET /v2/events?event_type=...`.
pub(crate) async fn stream(
    State(ctx): State<Ctx>,
    extensions: Extensions,
    params: Params,
) -> Result<Response, ApiError> {
    let wanted: Vec<String> = params
        .all("event_type")
        .into_iter()
        .map(str::to_string)
        .collect();
    let remote_address = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_default();
    let bus = ctx.controller.events().clone();
    // Subscribe before announcing, so that this stream sees its own attachment.
    let Some((receiver, permit)) = bus.open_stream() else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too many event streams are open; try again later",
        ));
    };
    bus.publish(
        "event_stream_attached",
        json!({ "remoteAddress": remote_address }),
    );
    // A reader that falls behind loses the events it missed (Marathon: the stream
    // is for cache invalidation, not a log); it is not disconnected.
    let events = BroadcastStream::new(receiver).filter_map(move |item| match item {
        Ok((event_type, event)) if wanted.is_empty() || wanted.contains(&event_type) => {
            Some(Ok(Event::default()
                .event(event_type)
                .data(event.to_string())))
        }
        _ => None,
    });
    let subscription = Subscription {
        events: Box::pin(events),
        bus,
        remote_address,
        _permit: permit,
    };
    Ok(Sse::new(subscription)
        .keep_alive(KeepAlive::new().interval(PING_INTERVAL).text("ping"))
        .into_response())
}
