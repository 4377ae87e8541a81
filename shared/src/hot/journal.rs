//! The per-project journal: the last applied edits of a project (at least [`DEFAULT_JOURNAL_LEN`] by default), each
//! with the broadcast frame its clients were sent. The edit script appends to it in the same atomic call that
//! applies the edit, so a client that reconnects, a gateway whose pub/sub dropped messages and the change feed can
//! all catch up from a `seq` instead of reading a full snapshot.

use std::sync::Arc;

/// Edits each project's journal holds at least, unless configured otherwise (`CANVAS_JOURNAL_LEN`).
pub const DEFAULT_JOURNAL_LEN: usize = 1000;

/// Entries one journal read returns at most: a caller reads longer stretches page by page, so no single reply
/// holds a whole journal of large frames.
pub const JOURNAL_PAGE: usize = 256;

/// One applied edit as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub seq: u64,
    /// Connection id of the sender (its own gateway sends it an echo rather than the frame).
    pub origin: String,
    /// The broadcast frame (`created`, `updated` or `deleted`, with `seq` and `by`).
    pub frame: Arc<str>,
}

/// A read of the journal after some `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalPage {
    /// The project's `seq` when the page was read.
    pub seq: u64,
    /// The project's `savedSeq` when the page was read.
    pub saved_seq: u64,
    /// The entries right after the requested `seq`, in order and without a gap, at most the requested number;
    /// `None` when the journal no longer holds the requested `seq` itself (trimmed, or the project was loaded
    /// into the hot state since) or that `seq` is above the project's.
    pub entries: Option<Vec<JournalEntry>>,
}

impl JournalPage {
    /// Builds a page from what a store read: the entries from `after` on, in journal order. They cover `after`
    /// only when they start with the entry of `after` itself and have no gap: an edit the journal still holds
    /// is one of the project's present life in the hot state, so a client that saw it holds what the journal
    /// continues from. (A `seq` with no entry may come from before the hot state lost the project, or from a
    /// load at that `seq`; either way only a snapshot is certain.)
    pub fn new(after: u64, seq: u64, saved_seq: u64, mut entries: Vec<JournalEntry>) -> Self {
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(i, entry)| Some(entry.seq) == after.checked_add(i as u64));
        let covered = after <= seq && contiguous && entries.first().is_some_and(|e| e.seq == after);
        if covered {
            entries.remove(0);
        }
        Self {
            seq,
            saved_seq,
            entries: covered.then_some(entries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> JournalEntry {
        JournalEntry {
            seq,
            origin: "c".into(),
            frame: Arc::from("{}"),
        }
    }

    #[test]
    fn a_page_covers_only_from_an_entry_it_holds_and_without_gaps() {
        let seqs = |p: &JournalPage| {
            p.entries
                .as_ref()
                .map(|e| e.iter().map(|e| e.seq).collect::<Vec<_>>())
        };
        let page = JournalPage::new(4, 6, 0, vec![entry(4), entry(5), entry(6)]);
        assert_eq!(seqs(&page), Some(vec![5, 6]));
        assert_eq!(
            seqs(&JournalPage::new(6, 6, 0, vec![entry(6)])),
            Some(vec![])
        );
        assert_eq!(
            seqs(&JournalPage::new(4, 6, 0, vec![entry(5), entry(6)])),
            None,
            "trimmed"
        );
        assert_eq!(
            seqs(&JournalPage::new(
                4,
                7,
                0,
                vec![entry(4), entry(5), entry(7)]
            )),
            None,
            "gap"
        );
        assert_eq!(
            seqs(&JournalPage::new(7, 6, 0, vec![])),
            None,
            "ahead of the project"
        );
        assert_eq!(
            seqs(&JournalPage::new(6, 6, 0, vec![])),
            None,
            "loaded at that seq: not this life's"
        );
    }
}
