//! Catching up from the journal instead of a snapshot: the edits of a project after some `seq`, up to the `seq`
//! the project had when the replay began, read page by page. A reconnecting client (`since`), this gateway's
//! own repair after pub/sub lost messages, and the change feed all read it this way.

use canvas_shared::hot::{EditStore, HotError, JournalEntry, JOURNAL_PAGE};
use canvas_shared::ProjectId;

use crate::error::ApiError;

/// Why a replay stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayError {
    /// The journal no longer holds the next edit (it was trimmed, or the project reloaded, while reading).
    #[error("the journal moved on while it was read")]
    Gone,
    #[error(transparent)]
    Hot(HotError),
}

impl From<HotError> for ReplayError {
    fn from(e: HotError) -> Self {
        ReplayError::Hot(e)
    }
}

/// The edits in (`since`, `seq`] of one project, as the journal holds them.
pub(crate) struct Replay {
    project: ProjectId,
    /// The last entry handed out so far.
    after: u64,
    /// The project's `seq` and `savedSeq` when the replay began; it ends at that `seq`.
    pub(crate) seq: u64,
    pub(crate) saved_seq: u64,
    first: Option<Vec<JournalEntry>>,
}

impl Replay {
    /// Begins a replay of everything after `since`, or `None` when the journal does not reach back to it (or
    /// `since` is above the project's `seq`).
    pub(crate) async fn open(
        hot: &dyn EditStore,
        project: &ProjectId,
        since: u64,
    ) -> Result<Option<Self>, HotError> {
        let page = hot.journal_after(project, since, JOURNAL_PAGE).await?;
        Ok(page.entries.map(|entries| Self {
            project: project.clone(),
            after: since,
            seq: page.seq,
            saved_seq: page.saved_seq,
            first: Some(entries),
        }))
    }

    /// The next entries in seq order, or `None` once the replay reached its end.
    pub(crate) async fn next_page(
        &mut self,
        hot: &dyn EditStore,
    ) -> Result<Option<Vec<JournalEntry>>, ReplayError> {
        if self.after >= self.seq {
            return Ok(None);
        }
        let mut entries = match self.first.take() {
            Some(entries) => entries,
            None => hot
                .journal_after(&self.project, self.after, JOURNAL_PAGE)
                .await?
                .entries
                .ok_or(ReplayError::Gone)?,
        };
        entries.retain(|entry| entry.seq <= self.seq);
        match entries.last() {
            Some(last) => self.after = last.seq,
            None => return Err(ReplayError::Gone),
        }
        Ok(Some(entries))
    }
}

/// A `since` (or `Last-Event-ID`) given as text: the seq a client already has.
pub(crate) fn parse_since(raw: Option<&str>) -> Result<Option<u64>, ApiError> {
    raw.map(|text| {
        text.trim().parse::<u64>().map_err(|_| {
            ApiError::BadRequest("`since` must be a non-negative integer (a seq)".into())
        })
    })
    .transpose()
}
