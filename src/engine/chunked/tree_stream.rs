//! The tree's bytes between the thread that writes its lines and the thread that cuts them into chunks.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Bytes per message: large enough that the channel costs nothing, small enough to bound memory.
const PIECE: usize = 256 << 10;
/// Pieces in flight.
const PIECES: usize = 4;

/// The writing end: a `Write` whose bytes come out of the matching [`TreeBytesReader`], in order.
pub(crate) struct TreeBytes {
    buffer: Vec<u8>,
    sender: SyncSender<Vec<u8>>,
}

/// The reading end: ends when the writer is dropped.
pub(crate) struct TreeBytesReader {
    receiver: Receiver<Vec<u8>>,
    piece: Vec<u8>,
    at: usize,
}

pub(crate) fn tree_bytes() -> (TreeBytes, TreeBytesReader) {
    let (sender, receiver) = sync_channel(PIECES);
    (TreeBytes { buffer: Vec::with_capacity(PIECE), sender }, TreeBytesReader { receiver, piece: Vec::new(), at: 0 })
}

impl TreeBytes {
    fn send(&mut self) -> io::Result<()> {
        let piece = std::mem::replace(&mut self.buffer, Vec::with_capacity(PIECE));
        self.sender.send(piece).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the tree chunker stopped"))
    }
}

impl Write for TreeBytes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= PIECE {
            self.send()?;
        }
        Ok(buf.len())
    }

    /// Sends what is buffered: the tree's end is a flush, so the chunker sees every byte before the end.
    fn flush(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

impl Read for TreeBytesReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.piece.len() {
            match self.receiver.recv() {
                Ok(piece) => {
                    self.piece = piece;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.piece.len() - self.at);
        buf[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The bytes of a list of chunks, in order, read out of their packs: how a tree is read back. Blocking (it
/// waits for the store through `runtime`), for a thread of its own. The last pack read is kept, as a tree's
/// chunks were packed one after another.
pub(crate) struct ChunkStream {
    store: std::sync::Arc<dyn crate::store::Store>,
    identities: std::sync::Arc<crate::crypto::Identities>,
    keys: std::sync::Arc<crate::chunks::ChunkKeys>,
    index: std::sync::Arc<crate::chunks::ChunkIndex>,
    chunks: std::vec::IntoIter<crate::chunks::ChunkId>,
    /// What the chunks make up, for errors ("objects/…/tree.json.zst.age").
    what: String,
    runtime: tokio::runtime::Handle,
    /// The pack being read, by number, and how far: a tree's chunks follow each other in a pack.
    pack: Option<(u32, u32, crate::chunks::PackStream)>,
    current: Vec<u8>,
    at: usize,
}

impl ChunkStream {
    pub(crate) fn new(
        store: std::sync::Arc<dyn crate::store::Store>,
        identities: std::sync::Arc<crate::crypto::Identities>,
        keys: std::sync::Arc<crate::chunks::ChunkKeys>,
        index: std::sync::Arc<crate::chunks::ChunkIndex>,
        chunks: Vec<crate::chunks::ChunkId>,
        what: String,
        runtime: tokio::runtime::Handle,
    ) -> ChunkStream {
        ChunkStream {
            store,
            identities,
            keys,
            index,
            chunks: chunks.into_iter(),
            what,
            runtime,
            pack: None,
            current: Vec::new(),
            at: 0,
        }
    }

    fn next_chunk(&mut self) -> crate::Result<Option<Vec<u8>>> {
        let Some(id) = self.chunks.next() else { return Ok(None) };
        let location = self.index.locate(&id).ok_or_else(|| crate::Error::ObjectCorrupt {
            key: self.what.clone(),
            reason: format!("it needs chunk {id}, which no pack index lists"),
        })?;
        // Streamed, never held whole: the same pack goes on forward, another (or an earlier chunk) opens anew.
        let reusable =
            self.pack.as_ref().is_some_and(|(pack, next, _)| *pack == location.pack_number && location.offset >= *next);
        if !reusable {
            let key = crate::chunks::pack_key(&location.pack.name());
            let reader = self.runtime.block_on(self.store.get(&key))?;
            let stored = Box::new(tokio_util::io::SyncIoBridge::new_with_handle(reader, self.runtime.clone()));
            let stream = crate::chunks::PackStream::open(stored, self.store.location(), &key, &self.identities)?;
            self.pack = Some((location.pack_number, 0, stream));
        }
        let Some((_, next, stream)) = self.pack.as_mut() else { return Ok(None) };
        let chunk = stream.chunk_at(location.offset, location.stored_len, location.plain_len, &id, &self.keys.key)?;
        *next = location.offset + location.stored_len;
        Ok(Some(chunk))
    }
}

impl Read for ChunkStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.next_chunk().map_err(io::Error::other)? {
                Some(chunk) => {
                    self.current = chunk;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_written_is_read_in_order_and_the_end_is_the_writer_dropping() {
        let (mut writer, mut reader) = tree_bytes();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writing = std::thread::spawn(move || {
            for piece in data.chunks(1000) {
                writer.write_all(piece).unwrap();
            }
            writer.flush().unwrap();
        });
        let mut read = Vec::new();
        reader.read_to_end(&mut read).unwrap();
        writing.join().unwrap();
        assert_eq!(read, expected);
    }
}
