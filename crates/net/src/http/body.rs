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
/// takes longer than `limit`: the time bound of a request whose body a
/// library reads itself (oci-client's manifests and tokens).
pub async fn deadline<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Failure> {
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        Failure::new(
            FailureKind::Transport,
            format!("no complete answer within {} s", limit.as_secs()),
        )
    })
}

/// A reqwest response's body as a stream of chunks.
pub(crate) fn chunks(
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
