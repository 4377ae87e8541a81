//! The change feed: `GET /api/projects/{p}/changes?since=N` as Server-Sent Events, for integrations that mirror a
//! project into their own store. Each applied edit is one event (`id` = its seq, `event` = the frame's type, `data`
//! = the broadcast frame); `saved` watermarks come as `event: saved`. It catches up from the journal like a
//! resuming socket (a `Last-Event-ID` takes the place of `since`), and starts with a `snapshot` event when the
//! journal does not reach back. Live events come through the hub as for a socket, with the same bounded queue: a
//! consumer that stops reading is dropped (the stream ends) rather than buffered without end.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use canvas_shared::protocol::snapshot_frame;
use canvas_shared::ProjectId;
use futures_util::Stream;
use tokio_util::sync::CancellationToken;

use crate::admission::Admitted;
use crate::connection::outbox::{outbox, Outbound, OutboxReceiver};
use crate::error::ApiError;
use crate::hub::Member;
use crate::replay::parse_since;
use crate::replay::Replay;
use crate::state::AppState;

/// A comment line at least this often keeps proxies and clients from timing the stream out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(crate) async fn changes(
    State(state): State<AppState>,
    Admitted { project, query }: Admitted,
    headers: HeaderMap,
) -> Response {
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("not text"));
    let since = match parse_since(last_event_id.or(query.get("since").map(String::as_str))) {
        Ok(since) => since,
        Err(e) => return e.into_response(),
    };
    if state.shutdown.is_cancelled() {
        return ApiError::Unavailable("gateway is shutting down".into()).into_response();
    }
    let feed = Feed::open(state, project, since).await;
    Sse::new(feed.into_stream())
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// One consumer's stream: a member of the project's room until it ends.
struct Feed {
    state: AppState,
    project: ProjectId,
    id: Arc<str>,
    rx: OutboxReceiver,
    kill: CancellationToken,
    /// Where the consumer is: the seq of the last edit (or snapshot) it was sent.
    at: Option<u64>,
    /// The journal replay under way.
    replay: Option<Replay>,
    pending: VecDeque<Event>,
    /// The catch-up (replay or snapshot) is still to be done.
    since: Option<Option<u64>>,
}

impl Feed {
    async fn open(state: AppState, project: ProjectId, since: Option<u64>) -> Self {
        let (tx, rx) = outbox(state.tuning.outgoing_queue.max(16));
        let kill = CancellationToken::new();
        let id: Arc<str> = Arc::from(format!("feed-{}", uuid::Uuid::new_v4().simple()));
        let member = Member {
            tx,
            kill: kill.clone(),
        };
        // Joined before catching up, so that nothing published after the catch-up's read is missed.
        state.hub.join(&project, Arc::clone(&id), member).await;
        Self {
            state,
            project,
            id,
            rx,
            kill,
            at: None,
            replay: None,
            pending: VecDeque::new(),
            since: Some(since),
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures_util::stream::unfold(self, |mut feed| async move {
            let event = feed.next().await?;
            Some((Ok(event), feed))
        })
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if let Some(since) = self.since.take() {
                self.catch_up(since).await?;
                continue;
            }
            if self.replay.is_some() {
                self.next_page().await?;
                continue;
            }
            let outbound = tokio::select! {
                _ = self.kill.cancelled() => return None,
                _ = self.state.shutdown.cancelled() => return None,
                outbound = self.rx.recv() => outbound?,
            };
            match outbound {
                Outbound::Broadcast { seq: 0, frame } if frame_type(&frame) == Some("saved") => {
                    return Some(Event::default().event("saved").data(&*frame));
                }
                Outbound::Broadcast { seq: 0, .. } => {}
                Outbound::Broadcast { seq, frame } => self.push_edit(seq, &frame),
                Outbound::Repair => self.snapshot().await?,
                _ => {}
            }
        }
    }

    /// From the journal when it covers `since`, else from a snapshot.
    async fn catch_up(&mut self, since: Option<u64>) -> Option<()> {
        if let Some(since) = since {
            if let Some(replay) = self
                .state
                .loader
                .replay_for_client(&self.project, since)
                .await
            {
                self.state.metrics.record_catch_up("feed", "journal");
                self.at = Some(since);
                self.replay = Some(replay);
                return Some(());
            }
            self.state.metrics.record_catch_up("feed", "snapshot");
        }
        self.snapshot().await
    }

    async fn next_page(&mut self) -> Option<()> {
        let replay = self.replay.as_mut()?;
        match replay.next_page(self.state.hot.as_ref()).await {
            Ok(Some(entries)) => {
                for entry in entries {
                    self.push_edit(entry.seq, &entry.frame);
                }
            }
            Ok(None) => self.replay = None,
            Err(e) => {
                tracing::info!(project = %self.project, error = %e, "change feed replay stopped; sending a snapshot");
                self.replay = None;
                self.snapshot().await?;
            }
        }
        Some(())
    }

    /// An edit, unless the consumer already has it (a live broadcast the catch-up covered, or a repeat).
    fn push_edit(&mut self, seq: u64, frame: &str) {
        if self.at.is_some_and(|at| seq <= at) {
            return;
        }
        self.at = Some(seq);
        let kind = frame_type(frame).unwrap_or("message");
        self.pending
            .push_back(Event::default().id(seq.to_string()).event(kind).data(frame));
    }

    /// The project as it is now, as the first event (or after a loss only a snapshot repairs); `None` ends
    /// the stream after an `error` event when it cannot be read (the consumer reconnects with its last id).
    async fn snapshot(&mut self) -> Option<()> {
        match self.state.loader.snapshot(&self.project).await {
            Ok(snapshot) => {
                self.state.hub.observe_catch_up(&self.project, snapshot.seq);
                let frame = snapshot_frame(
                    self.project.as_str(),
                    snapshot.seq,
                    snapshot.saved_seq,
                    None,
                    &snapshot.objects,
                );
                self.replay = None;
                self.pending.retain(|_| false);
                self.at = Some(snapshot.seq);
                self.pending.push_back(
                    Event::default()
                        .id(snapshot.seq.to_string())
                        .event("snapshot")
                        .data(frame),
                );
                Some(())
            }
            Err(r) => {
                let error = serde_json::json!({"code": r.code, "message": r.message}).to_string();
                self.pending
                    .push_back(Event::default().event("error").data(error));
                self.kill.cancel();
                Some(())
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let (hub, project, id) = (
            Arc::clone(&self.state.hub),
            self.project.clone(),
            Arc::clone(&self.id),
        );
        tokio::spawn(async move { hub.leave(&project, &id).await });
    }
}

/// The `type` of a server frame: every frame is encoded with `type` first.
fn frame_type(frame: &str) -> Option<&str> {
    let rest = frame.strip_prefix("{\"type\":\"")?;
    rest.split('"').next()
}
