//! The pipe between a layer's download (async) and its unpacker (a
//! blocking thread), bounded in bytes: memory stays flat however large the
//! chunks a fast registry sends, and a slow disk slows the download down
//! instead of piling the layer up in RAM.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// A chunk and its share of the byte budget, given back once read.
struct Piece {
    data: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// `None` marks the real end of the body.
type Message = Option<Piece>;

/// A pipe that holds at most `budget` bytes (one larger chunk passes
/// alone, so that it cannot wait forever).
pub(crate) fn pipe(budget: usize) -> (BodySender, BodyReader) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = budget.clamp(1, Semaphore::MAX_PERMITS);
    (
        BodySender {
            tx,
            budget: Arc::new(Semaphore::new(budget)),
            limit: budget,
        },
        BodyReader {
            rx,
            piece: None,
            ended: false,
        },
    )
}

/// The reader went away (its own error says why).
#[derive(Debug)]
pub(crate) struct Closed;

pub(crate) struct BodySender {
    tx: mpsc::UnboundedSender<Message>,
    budget: Arc<Semaphore>,
    limit: usize,
}

impl BodySender {
    /// Waits until the chunk fits in the budget, then queues it.
    pub(crate) async fn send(&self, data: Bytes) -> Result<(), Closed> {
        let cost = data.len().min(self.limit);
        // The semaphore is never closed, and u32 holds any budget we use.
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(u32::try_from(cost).unwrap_or(u32::MAX))
            .await
            .map_err(|_| Closed)?;
        self.tx
            .send(Some(Piece {
                data,
                _budget: permit,
            }))
            .map_err(|_| Closed)
    }

    /// The whole body was sent. Dropping the sender without this tells the
    /// reader that the download died.
    pub(crate) fn finish(self) {
        let _ = self.tx.send(None);
    }
}

/// The blocking end. The pipe closing without the end mark must not look
/// like a short but complete blob.
pub(crate) struct BodyReader {
    rx: mpsc::UnboundedReceiver<Message>,
    piece: Option<Piece>,
    ended: bool,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(piece) = self.piece.as_mut().filter(|p| !p.data.is_empty()) {
                let n = buf.len().min(piece.data.len());
                buf[..n].copy_from_slice(&piece.data[..n]);
                piece.data.advance(n);
                return Ok(n);
            }
            // Gives the budget of the piece read back.
            self.piece = None;
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Some(piece)) => self.piece = Some(piece),
                Some(None) => self.ended = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the layer download was interrupted",
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn the_end_mark_tells_end_from_abort() {
        let rt = runtime();
        let (tx, mut rx) = pipe(16);
        rt.block_on(tx.send(Bytes::from_static(b"abc"))).unwrap();
        tx.finish();
        let mut s = String::new();
        rx.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");

        let (tx, mut rx) = pipe(16);
        rt.block_on(tx.send(Bytes::from_static(b"abc"))).unwrap();
        drop(tx);
        let err = rx.read_to_string(&mut s).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn the_sender_waits_for_the_reader_beyond_the_budget() {
        let rt = runtime();
        let (tx, mut rx) = pipe(10);
        let send = |data: &'static [u8]| {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(50), tx.send(Bytes::from_static(data)))
                    .await
                    .is_ok()
            })
        };
        assert!(send(b"123456"));
        assert!(send(b"7890"));
        // 10 bytes are in the pipe: one more must wait.
        assert!(!send(b"x"));
        // Reading part of a piece keeps its budget; finishing it frees it.
        let mut buf = [0u8; 4];
        assert_eq!(rx.read(&mut buf).unwrap(), 4);
        assert!(!send(b"x"));
        assert_eq!(rx.read(&mut buf).unwrap(), 2);
        assert_eq!(rx.read(&mut buf).unwrap(), 4);
        assert!(send(b"abcdef"));
        // A chunk larger than the whole budget still goes, alone.
        let (tx2, mut rx2) = pipe(4);
        rt.block_on(tx2.send(Bytes::from_static(b"larger than four")))
            .unwrap();
        tx2.finish();
        let mut s = String::new();
        rx2.read_to_string(&mut s).unwrap();
        assert_eq!(s, "larger than four");
    }

    #[test]
    fn a_reader_gone_releases_the_sender() {
        let rt = runtime();
        let (tx, rx) = pipe(4);
        rt.block_on(tx.send(Bytes::from_static(b"1234"))).unwrap();
        drop(rx);
        assert!(rt.block_on(tx.send(Bytes::from_static(b"5"))).is_err());
    }
}
