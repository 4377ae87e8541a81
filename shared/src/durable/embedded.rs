//! The embedded durable store of the one-process dev mode: a redb file (pure Rust, ACID), by default under
//! `./data`. It honours the same contract as DynamoDB, so the saver cannot tell them apart: a write lands only over
//! an older stamp, and a delete leaves a tombstone.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};

use super::{
    check_group, DurableError, DurableStore, ItemWrite, LoadedProject, WriteOp, WriteOutcome,
};
use crate::cause::Cause;
use crate::ids::{ObjectId, ProjectId};
use crate::stored::StoredObject;

/// (project id, object id) → (object JSON, or [`TOMBSTONE`] for a deleted object; its stamp).
const OBJECTS: TableDefinition<(&str, &str), (&str, i64)> = TableDefinition::new("canvas_objects");

/// The JSON text of a tombstone: no object is ever stored as an empty text.
const TOMBSTONE: &str = "";
/// project id → the persisted `seq` watermark (DynamoDB keeps it as the project's `~seq` item).
const SEQS: TableDefinition<&str, u64> = TableDefinition::new("canvas_seqs");

/// redb-backed [`DurableStore`]; clones share the database.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

fn failed(e: impl std::fmt::Display) -> DurableError {
    DurableError::Unavailable(Cause::described(format!("embedded store: {e}")))
}

impl EmbeddedStore {
    /// Opens (or creates) the database file, creating its folder when needed.
    pub fn open(path: &Path) -> Result<Self, DurableError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| failed(format!("cannot create {}: {e}", parent.display())))?;
        }
        let db = Database::create(path)
            .map_err(|e| failed(format!("cannot open {}: {e}", path.display())))?;
        let store = Self { db: Arc::new(db) };
        store.create_table()?;
        Ok(store)
    }

    fn create_table(&self) -> Result<(), DurableError> {
        let txn = self.db.begin_write().map_err(failed)?;
        txn.open_table(OBJECTS).map_err(failed)?;
        txn.open_table(SEQS).map_err(failed)?;
        txn.commit().map_err(failed)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, DurableError> + Send + 'static,
    ) -> Result<T, DurableError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(failed)?
    }
}

#[async_trait]
impl DurableStore for EmbeddedStore {
    async fn write_batch(&self, writes: &[ItemWrite]) -> Result<WriteOutcome, DurableError> {
        // Refuse what BatchWriteItem refuses, so dev mode catches a saver that would fail in production.
        check_group(writes)?;
        let writes = writes.to_vec();
        self.blocking(move |db| {
            let mut outcome = WriteOutcome::default();
            let txn = db.begin_write().map_err(failed)?;
            {
                let mut table = txn.open_table(OBJECTS).map_err(failed)?;
                for write in &writes {
                    let key = (write.project.as_str(), write.object_id().as_str());
                    let held = table.get(key).map_err(failed)?.map(|v| v.value().1);
                    if held.is_some_and(|stamp| stamp >= write.stamp()) {
                        outcome.superseded.push(write.clone());
                        continue;
                    }
                    let json = match &write.op {
                        WriteOp::Put(object) => object.json.as_str(),
                        WriteOp::Delete(_) => TOMBSTONE,
                    };
                    table.insert(key, (json, write.stamp())).map_err(failed)?;
                }
            }
            txn.commit().map_err(failed)?;
            Ok(outcome)
        })
        .await
    }

    async fn load_project(&self, project: &ProjectId) -> Result<LoadedProject, DurableError> {
        let project = project.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(failed)?;
            let table = txn.open_table(OBJECTS).map_err(failed)?;
            let mut loaded = LoadedProject::default();
            for entry in table.range((project.as_str(), "")..).map_err(failed)? {
                let (key, value) = entry.map_err(failed)?;
                let (p, o) = key.value();
                if p != project.as_str() {
                    break;
                }
                let (json, updated_at) = value.value();
                loaded.stamp_floor = loaded.stamp_floor.max(updated_at);
                if json == TOMBSTONE {
                    continue;
                }
                if let Ok(id) = ObjectId::parse(o) {
                    loaded.objects.push(StoredObject {
                        id,
                        json: json.to_string(),
                        updated_at,
                    });
                }
            }
            let seqs = txn.open_table(SEQS).map_err(failed)?;
            loaded.seq = seqs
                .get(project.as_str())
                .map_err(failed)?
                .map_or(0, |seq| seq.value());
            Ok(loaded)
        })
        .await
    }

    async fn persist_seq(&self, project: &ProjectId, seq: u64) -> Result<(), DurableError> {
        let project = project.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(failed)?;
            {
                let mut seqs = txn.open_table(SEQS).map_err(failed)?;
                let stored = seqs
                    .get(project.as_str())
                    .map_err(failed)?
                    .map_or(0, |s| s.value());
                if seq > stored {
                    seqs.insert(project.as_str(), seq).map_err(failed)?;
                }
            }
            txn.commit().map_err(failed)
        })
        .await
    }

    async fn ensure_table(&self, _create: bool) -> Result<(), DurableError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), DurableError> {
        Ok(())
    }
}
