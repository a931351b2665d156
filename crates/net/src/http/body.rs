//! Bodies read into memory, bounded by size and by time.

use std::future::Future;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use super::{Failure, FailureKind};

/// How much of a body may be kept in memory, and for how long it may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimit {
    pub max_size: u64,
    /// For the whole body, from the first read.
    pub timeout: Duration,
}

/// Why a bounded read stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError<E> {
    /// Announced (`Content-Length`) or found larger than the limit.
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("the body did not arrive within {} s", .0.as_secs())]
    TimedOut(Duration),
    /// The stream's own error.
    #[error("{0}")]
    Read(E),
}

impl<E> BodyError<E> {
    /// The failure of an attempt: too large is final, too slow is worth
    /// another try, a read error is what `read` makes of it.
    pub fn into_failure(self, read: impl FnOnce(E) -> Failure) -> Failure {
        match self {
            BodyError::TooLarge(max) => {
                Failure::other(format!("the body is larger than {max} bytes"))
            }
            BodyError::TimedOut(limit) => Failure::new(
                FailureKind::Transport,
                format!("the body did not arrive within {} s", limit.as_secs()),
            ),
            BodyError::Read(e) => read(e),
        }
    }
}

/// Reads `body` (a stream of chunks) into memory: refused at once when
/// `announced` (its `Content-Length`) is over the limit, and as soon as the
/// chunks received go over it (a chunked body announces nothing).
pub async fn read_bounded<S, B, E>(
    body: S,
    announced: Option<u64>,
    limit: BodyLimit,
) -> Result<Vec<u8>, BodyError<E>>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
{
    if announced.is_some_and(|len| len > limit.max_size) {
        return Err(BodyError::TooLarge(limit.max_size));
    }
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(BodyError::Read)?;
            let chunk = chunk.as_ref();
            if (out.len() + chunk.len()) as u64 > limit.max_size {
                return Err(BodyError::TooLarge(limit.max_size));
            }
            out.extend_from_slice(chunk);
        }
        Ok(out)
    };
    tokio::time::timeout(limit.timeout, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut(limit.timeout)))
}

/// `fut`'s output, or a transport failure (worth another attempt) if it
/// takes longer than `limit`: the time bound of an answer's headers.
pub async fn deadline<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Failure> {
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        Failure::new(
            FailureKind::Transport,
            format!("no complete answer within {} s", limit.as_secs()),
        )
    })
}

/// The minimum-progress rule of a long download: a body that brings
/// less than `bytes` in a `window` is stalled, and the attempt fails (to
/// be retried, or resumed). Time spent waiting for the consumer (a slow
/// disk) does not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinProgress {
    pub bytes: u64,
    pub window: Duration,
}

impl Default for MinProgress {
    /// 32 KiB in 30 s: about 1 KB/s.
    fn default() -> Self {
        MinProgress {
            bytes: 32 << 10,
            window: Duration::from_secs(30),
        }
    }
}

/// Applies a [`MinProgress`] rule to the reads of one body.
pub struct Progress {
    rule: MinProgress,
    window_end: tokio::time::Instant,
    seen: u64,
}

impl Progress {
    pub fn new(rule: MinProgress) -> Progress {
        Progress {
            rule,
            window_end: tokio::time::Instant::now() + rule.window,
            seen: 0,
        }
    }

    /// `read`'s chunk (or end, or error), or a retryable failure if the
    /// current window ends with too little received.
    pub async fn read<F, B, E>(&mut self, read: F) -> Result<Result<Option<B>, E>, Failure>
    where
        F: Future<Output = Result<Option<B>, E>>,
        B: AsRef<[u8]>,
    {
        let mut read = std::pin::pin!(read);
        loop {
            match tokio::time::timeout_at(self.window_end, &mut read).await {
                Ok(answer) => {
                    if let Ok(Some(chunk)) = &answer {
                        self.seen += chunk.as_ref().len() as u64;
                        if tokio::time::Instant::now() >= self.window_end {
                            self.judge()?;
                        }
                    }
                    return Ok(answer);
                }
                Err(_) => self.judge()?,
            }
        }
    }

    /// The consumer made the reads wait this long: not the sender's fault.
    pub fn pause(&mut self, waited: Duration) {
        self.window_end += waited;
    }

    /// At the end of a window: stalled, or a new window.
    fn judge(&mut self) -> Result<(), Failure> {
        if self.seen < self.rule.bytes {
            return Err(Failure::new(
                FailureKind::Transport,
                format!(
                    "stalled: {} bytes in {} s, less than the {} bytes b2c.pull_stall asks for",
                    self.seen,
                    self.rule.window.as_secs(),
                    self.rule.bytes
                ),
            ));
        }
        self.seen = 0;
        self.window_end = tokio::time::Instant::now() + self.rule.window;
        Ok(())
    }
}

/// At most the first `max` bytes of a body, read within `timeout`; what
/// could not be read is left out (the message of an error answer needs no
/// more, and its body may be endless).
pub async fn read_prefix(
    mut response: reqwest::Response,
    max: usize,
    timeout: Duration,
) -> Vec<u8> {
    let mut out = Vec::new();
    let read = async {
        while out.len() < max {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    out.extend_from_slice(&chunk[..chunk.len().min(max - out.len())])
                }
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
    out
}

/// A reqwest response's body as a stream of chunks.
pub fn chunks(
    response: reqwest::Response,
) -> impl Stream<Item = Result<impl AsRef<[u8]>, reqwest::Error>> {
    futures_util::stream::try_unfold(response, |mut r| async move {
        Ok(r.chunk().await?.map(|chunk| (chunk, r)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    const LIMIT: BodyLimit = BodyLimit {
        max_size: 10,
        timeout: Duration::from_secs(5),
    };

    fn body(chunks: &[&'static str]) -> impl Stream<Item = Result<&'static [u8], String>> {
        stream::iter(chunks.iter().map(|c| Ok(c.as_bytes())).collect::<Vec<_>>())
    }

    #[tokio::test]
    async fn reads_up_to_the_limit_and_no_further() {
        let read = read_bounded(body(&["01234", "56789"]), None, LIMIT).await;
        assert_eq!(read.unwrap(), b"0123456789");
        let read = read_bounded(body(&["01234", "56789", "x"]), None, LIMIT).await;
        assert!(matches!(read, Err(BodyError::TooLarge(10))));
        // An announced length over the limit: refused before any read.
        let read = read_bounded(body(&["0"]), Some(11), LIMIT).await;
        let err = read.unwrap_err();
        assert_eq!(err.to_string(), "the body is larger than 10 bytes");
        assert!(!err.into_failure(Failure::other).retryable());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_a_stall_and_a_slow_consumer_is_not() {
        use tokio::time::{sleep, Instant};
        let rule = MinProgress {
            bytes: 10,
            window: Duration::from_secs(30),
        };
        let chunk = |n: usize, after: u64| async move {
            sleep(Duration::from_secs(after)).await;
            Ok::<_, String>(Some(vec![0u8; n]))
        };
        // 12 bytes in the first window, then 1 byte every 10 s.
        let mut p = Progress::new(rule);
        let start = Instant::now();
        assert!(p.read(chunk(12, 1)).await.is_ok());
        let mut reads = 0;
        let err = loop {
            match p.read(chunk(1, 10)).await {
                Ok(_) => reads += 1,
                Err(e) => break e,
            }
        };
        assert!(
            err.retryable() && err.detail.starts_with("stalled: 3 bytes in 30 s"),
            "{err}"
        );
        // The second window ends 30 s after the first: 3 bytes in it.
        assert_eq!((reads, start.elapsed()), (5, Duration::from_secs(60)));

        // Enough in every window, however long each chunk takes to come.
        let mut p = Progress::new(rule);
        for _ in 0..10 {
            p.read(chunk(20, 25)).await.unwrap().unwrap();
        }
        // A consumer that makes the reads wait does not count.
        let mut p = Progress::new(rule);
        sleep(Duration::from_secs(100)).await;
        p.pause(Duration::from_secs(100));
        p.read(chunk(10, 29)).await.unwrap().unwrap();
        // An endless wait with nothing at all: stalled at the window's end.
        let mut p = Progress::new(rule);
        let start = Instant::now();
        let pending = std::future::pending::<Result<Option<Vec<u8>>, String>>();
        assert!(p.read(pending).await.is_err());
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out() {
        let stalled = stream::iter([Ok::<_, String>(b"0".as_slice())]).chain(stream::pending());
        let err = read_bounded(stalled, None, LIMIT).await.unwrap_err();
        assert!(matches!(err, BodyError::TimedOut(_)), "{err}");
        let f = err.into_failure(Failure::other);
        assert!(f.retryable(), "{f}");
        let f = deadline(Duration::from_secs(3), std::future::pending::<()>())
            .await
            .unwrap_err();
        assert!(f.retryable(), "{f}");
        assert_eq!(f.detail, "no complete answer within 3 s");
        let broken = stream::iter([Err::<&[u8], _>("reset".to_string())]);
        let err = read_bounded(broken, None, LIMIT).await.unwrap_err();
        assert_eq!(err.into_failure(Failure::other).detail, "reset");
    }
}
