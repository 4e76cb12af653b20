//! An in-memory store for unit tests. It keeps the same visibility rules as the real stores.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::Utc;

use super::{ObjectMeta, ObjectReader, ObjectWriter, Store, check_key};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<String, Bytes>>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<String, Bytes>> {
        // A panic while holding the lock cannot leave the map half-updated: every update is one insert.
        self.objects.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn location(&self) -> &str {
        "memory"
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        check_key(key)?;
        self.objects().insert(key.to_string(), data);
        Ok(())
    }

    async fn put_stream(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        check_key(key)?;
        Ok(Box::new(MemoryWriter { store: self.clone(), key: key.to_string(), buffer: BytesMut::new() }))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader> {
        check_key(key)?;
        let data = self.objects().get(key).cloned().ok_or_else(|| Error::ObjectMissing { key: key.to_string() })?;
        Ok(Box::pin(std::io::Cursor::new(data)))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        check_key(key)?;
        Ok(self.objects().get(key).map(|data| ObjectMeta {
            key: key.to_string(),
            size: data.len() as u64,
            modified: Some(Utc::now()),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, data)| ObjectMeta { key: key.clone(), size: data.len() as u64, modified: None })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.objects().remove(key);
        Ok(())
    }
}

struct MemoryWriter {
    store: MemoryStore,
    key: String,
    buffer: BytesMut,
}

#[async_trait]
impl ObjectWriter for MemoryWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.buffer.extend_from_slice(&chunk);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<()> {
        self.store.objects().insert(self.key, self.buffer.freeze());
        Ok(())
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
