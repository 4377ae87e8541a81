//! The body of `GET /api/projects/{p}/objects`, streamed from the shared snapshot read: it goes out in chunks of
//! about [`CHUNK_BYTES`], each built when the connection wants it, instead of as one string as big as the project.
//!
//! Why: a project may hold 32 MiB of objects. The snapshot read is shared by every caller waiting for the project
//! (see `loader.rs`), so copying it into one body per request would cost a project's size again per reader; a
//! chunk at a time costs a chunk per reader, and the snapshot is dropped once the last body is sent.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use bytes::BytesMut;
use canvas_shared::hot::Snapshot;
use canvas_shared::protocol::objects_body;

/// About how much of the body one chunk holds (an object is never split; objects are at most 64 KiB by default).
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;

/// Where a streamed body stands.
struct Cursor {
    snapshot: Arc<Snapshot>,
    /// The body's opening (`{"projectId":…,"objects":[`), until it is sent.
    head: Option<String>,
    /// The next object to send.
    next: usize,
    /// The closing `]}` was sent.
    closed: bool,
}

/// The objects route's body for this snapshot: one piece when it is small, else a chunked stream.
pub(crate) fn body(project: &str, snapshot: Arc<Snapshot>) -> Body {
    let bytes: usize = snapshot.objects.iter().map(String::len).sum();
    if bytes <= CHUNK_BYTES {
        return Body::from(objects_body(
            project,
            snapshot.seq,
            snapshot.saved_seq,
            &snapshot.objects,
        ));
    }
    let mut head = objects_body(project, snapshot.seq, snapshot.saved_seq, &[]);
    // `…"objects":[]}` without its `]}`: the objects and the closing brackets follow.
    head.truncate(head.len() - 2);
    let cursor = Cursor {
        snapshot,
        head: Some(head),
        next: 0,
        closed: false,
    };
    Body::from_stream(futures_util::stream::unfold(cursor, |mut cursor| async {
        let chunk = next_chunk(&mut cursor)?;
        Some((Ok::<Bytes, Infallible>(chunk), cursor))
    }))
}

/// The next chunk of the body, or `None` once all of it was sent.
fn next_chunk(cursor: &mut Cursor) -> Option<Bytes> {
    if cursor.closed {
        return None;
    }
    let mut chunk = BytesMut::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 2);
    if let Some(head) = cursor.head.take() {
        chunk.extend_from_slice(head.as_bytes());
    }
    let objects = &cursor.snapshot.objects;
    while cursor.next < objects.len() && chunk.len() < CHUNK_BYTES {
        if cursor.next > 0 {
            chunk.extend_from_slice(b",");
        }
        chunk.extend_from_slice(objects[cursor.next].as_bytes());
        cursor.next += 1;
    }
    if cursor.next == objects.len() {
        chunk.extend_from_slice(b"]}");
        cursor.closed = true;
    }
    Some(chunk.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(body: Body) -> (usize, String) {
        use futures_util::StreamExt;
        let mut stream = body.into_data_stream();
        let (mut frames, mut text) = (0, Vec::new());
        while let Some(data) = stream.next().await {
            frames += 1;
            text.extend_from_slice(&data.expect("no error"));
        }
        (frames, String::from_utf8(text).expect("UTF-8"))
    }

    fn snapshot(objects: usize, pad: usize) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            seq: 7,
            saved_seq: 5,
            objects: (0..objects)
                .map(|i| format!(r#"{{"id":"o{i}","type":"t","pad":"{}"}}"#, "é".repeat(pad)))
                .collect(),
        })
    }

    #[tokio::test]
    async fn a_streamed_body_is_the_whole_body_in_bounded_chunks() {
        for (objects, pad) in [(0, 0), (3, 10), (200, 1000), (40, 30_000)] {
            let snap = snapshot(objects, pad);
            let whole = objects_body("p", snap.seq, snap.saved_seq, &snap.objects);
            let (frames, text) = collect(body("p", Arc::clone(&snap))).await;
            assert_eq!(text, whole, "{objects} objects of {pad}");
            // Every chunk but the last holds at least CHUNK_BYTES, and at most one object more.
            assert!(frames <= whole.len() / CHUNK_BYTES + 1, "{frames} chunks");
            if whole.len() > CHUNK_BYTES {
                assert!(frames > 1, "a big body is streamed");
            }
        }
    }
}
