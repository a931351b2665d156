//! A small S3 client: rusty-s3 signs (SigV4, presigned, sans-IO), the
//! boot's one HTTP layer ([`b2c_net::http`]) carries the requests (trust
//! roots, proxies, retries with backoff and `Retry-After`, bounded answers,
//! failure classification). Bodies are streamed from and to files: no
//! object is ever held in memory whole; large files go up in parts.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use b2c_cmdline::{MinioAlias, Proxy, SseKey};
use b2c_net::http::{
    read_bounded, redact, transfer_client, with_retries, BodyLimit, Failure, FailureKind,
    RetryPolicy, Trust,
};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
use reqwest::{Client, Method, RequestBuilder, Response};
use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CreateMultipartUpload, DeleteObject, GetObject,
    ListObjectsV2, PutObject, UploadPart,
};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Presigned URLs live this long: one attempt's worth, generously.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// Files above this go up as multipart uploads.
pub const MULTIPART_THRESHOLD: u64 = 64 << 20;
/// The smallest part (S3's minimum is 5 MiB); bigger when a file would
/// need more than 10,000 parts.
pub const PART_SIZE: u64 = 16 << 20;
/// Parts of one file in flight at once.
const PART_CONCURRENCY: usize = 4;
/// Reads from files into request bodies, in pieces this large.
const READ_CHUNK: usize = 256 << 10;
/// XML answers (listings, multipart ids, errors) are small.
const ANSWER_LIMIT: BodyLimit = BodyLimit {
    max_size: 16 << 20,
    timeout: Duration::from_secs(60),
};
/// The `mc mirror -a` attributes header.
pub const ATTRS_HEADER: &str = "x-amz-meta-mc-attrs";

/// One failed S3 operation: what, on which key, why. Never holds keys.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {failure}{}", if *.attempts > 1 { format!(" (after {} attempts)", .attempts) } else { String::new() })]
pub struct S3Error {
    pub what: String,
    pub failure: Failure,
    pub attempts: u32,
}

impl S3Error {
    fn once(what: impl Into<String>, failure: Failure) -> S3Error {
        S3Error {
            what: what.into(),
            failure,
            attempts: 1,
        }
    }

    /// The server could not be reached or refused us: every other request
    /// would fail the same way, so a sync stops at the first one.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.failure.kind,
            FailureKind::Transport
                | FailureKind::Server
                | FailureKind::TooManyRequests
                | FailureKind::Denied
                | FailureKind::Tls
                | FailureKind::Certificate { .. }
        )
    }
}

/// An object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub last_modified: SystemTime,
}

/// What a download found in the object's headers.
#[derive(Debug, Clone, Default)]
pub struct Downloaded {
    pub size: u64,
    pub last_modified: Option<SystemTime>,
    /// `x-amz-meta-mc-attrs`, when the object has one.
    pub attrs: Option<String>,
}

/// Bytes moved so far, shared with a progress reporter.
#[derive(Debug, Default, Clone)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A bucket of one `b2c.minio` endpoint.
pub struct S3Client {
    http: Client,
    bucket: Bucket,
    credentials: Credentials,
    retry: RetryPolicy,
    sse: HeaderMap,
    /// `ALIAS (URL)`, for messages.
    endpoint: String,
}

impl S3Client {
    pub fn new(
        endpoint: &MinioAlias,
        bucket: &str,
        sse: Option<&SseKey>,
        trust: &Trust,
        proxy: &Proxy,
        retry: RetryPolicy,
    ) -> Result<S3Client, S3Error> {
        let shown = format!("{} ({})", endpoint.alias, redact(&endpoint.url));
        let setup = |f: Failure| S3Error::once(format!("S3 endpoint {shown}"), f);
        let url = endpoint
            .url
            .parse()
            .map_err(|e| setup(Failure::other(format!("not a valid URL: {e}"))))?;
        // MinIO and most self-hosted servers want path-style requests.
        let bucket = Bucket::new(url, UrlStyle::Path, bucket.to_string(), "us-east-1")
            .map_err(|e| setup(Failure::other(format!("bucket {bucket}: {e}"))))?;
        let credentials =
            Credentials::new(endpoint.access_key.expose(), endpoint.secret_key.expose());
        Ok(S3Client {
            http: transfer_client(trust, proxy).map_err(setup)?,
            bucket,
            credentials,
            retry,
            sse: sse.map(sse_headers).unwrap_or_default(),
            endpoint: shown,
        })
    }

    /// `ALIAS (URL)`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn bucket(&self) -> &str {
        self.bucket.name()
    }

    /// Every object under `prefix` (`dir/` or empty), folder markers
    /// (keys ending in `/`) left out.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Object>, S3Error> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let what = format!("listing {}/{prefix}", self.bucket());
            let page = self
                .retrying(&what, || async {
                    let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
                    if !prefix.is_empty() {
                        action.with_prefix(prefix);
                    }
                    if let Some(t) = &token {
                        action.with_continuation_token(t.clone());
                    }
                    let url = action.sign(SIGNED_FOR);
                    let response = send(self.http.get(url)).await?;
                    let body = answer(response).await?;
                    ListObjectsV2::parse_response(&String::from_utf8_lossy(&body))
                        .map_err(|e| Failure::other(format!("a listing that does not parse: {e}")))
                })
                .await?;
            for o in page.contents {
                if o.key.ends_with('/') {
                    continue;
                }
                objects.push(Object {
                    last_modified: o
                        .last_modified
                        .as_deref()
                        .and_then(parse_timestamp)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    size: o.size.unwrap_or(0),
                    key: o.key,
                });
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(objects)
    }

    /// Streams `key` into the file `dest` (created or truncated), counting
    /// the bytes in `progress`. A failed attempt starts over.
    pub async fn download(
        &self,
        key: &str,
        dest: &Path,
        progress: &Progress,
    ) -> Result<Downloaded, S3Error> {
        let what = format!("downloading {}/{key}", self.bucket());
        self.retrying(&what, || async {
            let url = GetObject::new(&self.bucket, Some(&self.credentials), key).sign(SIGNED_FOR);
            let response = send(self.http.get(url).headers(self.sse.clone())).await?;
            let response = success(response).await?;
            let headers = response.headers();
            let info = Downloaded {
                size: 0,
                last_modified: headers
                    .get(reqwest::header::LAST_MODIFIED)
                    .and_then(|v| v.to_str().ok())
                    .and_then(b2c_net::http::parse_http_date),
                attrs: headers
                    .get(ATTRS_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from),
            };
            let io = |e: std::io::Error| Failure::other(format!("{}: {e}", dest.display()));
            let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
            let mut body = response.bytes_stream();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Failure::from_error(&e.without_url()))?;
                file.write_all(&chunk).await.map_err(io)?;
                size += chunk.len() as u64;
                progress.add(chunk.len() as u64);
            }
            file.flush().await.map_err(io)?;
            Ok(Downloaded { size, ..info })
        })
        .await
    }

    /// Uploads the `size` bytes of `src` as `key`, in parts above
    /// [`MULTIPART_THRESHOLD`]; `attrs` goes in [`ATTRS_HEADER`].
    pub async fn upload(
        &self,
        key: &str,
        src: &Path,
        size: u64,
        attrs: Option<&str>,
        progress: &Progress,
    ) -> Result<(), S3Error> {
        let mut headers = self.sse.clone();
        if let Some(attrs) = attrs.and_then(|a| HeaderValue::from_str(a).ok()) {
            headers.insert(HeaderName::from_static(ATTRS_HEADER), attrs);
        }
        if size > MULTIPART_THRESHOLD {
            return self.upload_parts(key, src, size, headers, progress).await;
        }
        let what = format!("uploading {}/{key}", self.bucket());
        self.retrying(&what, || async {
            let mut action = PutObject::new(&self.bucket, Some(&self.credentials), key);
            sign_headers(action.headers_mut(), &headers);
            let url = action.sign(SIGNED_FOR);
            let request = self
                .http
                .put(url)
                .headers(headers.clone())
                .header(CONTENT_LENGTH, size)
                .body(file_body(src, 0, size, progress.clone()));
            success(send(request).await?).await.map(drop)
        })
        .await
    }

    async fn upload_parts(
        &self,
        key: &str,
        src: &Path,
        size: u64,
        headers: HeaderMap,
        progress: &Progress,
    ) -> Result<(), S3Error> {
        let what = format!("uploading {}/{key}", self.bucket());
        let upload_id = self
            .retrying(&what, || async {
                let mut action =
                    CreateMultipartUpload::new(&self.bucket, Some(&self.credentials), key);
                sign_headers(action.headers_mut(), &headers);
                let url = action.sign(SIGNED_FOR);
                let body =
                    answer(send(self.http.post(url).headers(headers.clone())).await?).await?;
                CreateMultipartUpload::parse_response(&String::from_utf8_lossy(&body))
                    .map(|r| r.upload_id().to_string())
                    .map_err(|e| Failure::other(format!("an answer that does not parse: {e}")))
            })
            .await?;
        let part_size = part_size(size);
        let parts = size.div_ceil(part_size);
        let result: Result<Vec<String>, S3Error> = futures_util::stream::iter(0..parts)
            .map(|n| {
                let upload_id = &upload_id;
                async move {
                    let offset = n * part_size;
                    let len = part_size.min(size - offset);
                    let number = u16::try_from(n + 1).expect("at most 10,000 parts");
                    let what =
                        format!("uploading part {number}/{parts} of {}/{key}", self.bucket());
                    self.retrying(&what, || async {
                        let mut action = UploadPart::new(
                            &self.bucket,
                            Some(&self.credentials),
                            key,
                            number,
                            upload_id,
                        );
                        sign_headers(action.headers_mut(), &self.sse);
                        let url = action.sign(SIGNED_FOR);
                        let request = self
                            .http
                            .put(url)
                            .headers(self.sse.clone())
                            .header(CONTENT_LENGTH, len)
                            .body(file_body(src, offset, len, progress.clone()));
                        let response = success(send(request).await?).await?;
                        response
                            .headers()
                            .get(reqwest::header::ETAG)
                            .and_then(|v| v.to_str().ok())
                            .map(String::from)
                            .ok_or_else(|| Failure::other("a part uploaded without an ETag"))
                    })
                    .await
                }
            })
            .buffered(PART_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect();
        let etags = match result {
            Ok(etags) => etags,
            Err(e) => {
                self.abort(key, &upload_id).await;
                return Err(e);
            }
        };
        let done = self
            .retrying(&what, || async {
                let action = CompleteMultipartUpload::new(
                    &self.bucket,
                    Some(&self.credentials),
                    key,
                    &upload_id,
                    etags.iter().map(String::as_str),
                );
                let url = action.sign(SIGNED_FOR);
                let body = CompleteMultipartUpload::new(
                    &self.bucket,
                    Some(&self.credentials),
                    key,
                    &upload_id,
                    etags.iter().map(String::as_str),
                )
                .body();
                let answer = answer(send(self.http.post(url).body(body)).await?).await?;
                // S3 may answer 200 with an error document.
                if String::from_utf8_lossy(&answer).contains("<Error>") {
                    return Err(Failure::new(
                        FailureKind::Server,
                        "the server could not assemble the parts",
                    ));
                }
                Ok(())
            })
            .await;
        if done.is_err() {
            self.abort(key, &upload_id).await;
        }
        done
    }

    /// Best effort: the server would keep the parts otherwise.
    async fn abort(&self, key: &str, upload_id: &str) {
        let url = AbortMultipartUpload::new(&self.bucket, Some(&self.credentials), key, upload_id)
            .sign(SIGNED_FOR);
        if let Err(e) = self.http.request(Method::DELETE, url).send().await {
            log::debug!("aborting the upload of {key}: {}", e.without_url());
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let what = format!("deleting {}/{key}", self.bucket());
        self.retrying(&what, || async {
            let url =
                DeleteObject::new(&self.bucket, Some(&self.credentials), key).sign(SIGNED_FOR);
            success(send(self.http.delete(url)).await?).await.map(drop)
        })
        .await
    }

    async fn retrying<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, S3Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let shown = format!("{what} on {}", self.endpoint);
        with_retries(&self.retry, &shown, attempt)
            .await
            .map_err(|(failure, attempts)| S3Error {
                what: shown,
                failure,
                attempts,
            })
    }
}

/// Parts of at least [`PART_SIZE`], at most 10,000 of them.
pub fn part_size(size: u64) -> u64 {
    let min = size.div_ceil(10_000).next_multiple_of(1 << 20);
    PART_SIZE.max(min)
}

/// The SSE-C headers of a 32-byte key.
fn sse_headers(key: &SseKey) -> HeaderMap {
    use md5::Digest;
    let mut h = HeaderMap::new();
    let b64 = |bytes: &[u8]| HeaderValue::from_str(&base64(bytes)).expect("base64 is ASCII");
    h.insert(
        HeaderName::from_static("x-amz-server-side-encryption-customer-algorithm"),
        HeaderValue::from_static("AES256"),
    );
    h.insert(
        HeaderName::from_static("x-amz-server-side-encryption-customer-key"),
        b64(key.expose()),
    );
    h.insert(
        HeaderName::from_static("x-amz-server-side-encryption-customer-key-md5"),
        b64(&md5::Md5::digest(key.expose())),
    );
    h
}

/// Headers sent with a presigned request must be signed too.
fn sign_headers<'a>(map: &mut rusty_s3::Map<'a>, headers: &HeaderMap) {
    for (name, value) in headers {
        if let Ok(v) = value.to_str() {
            map.insert(name.as_str().to_string(), v.to_string());
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            s.push(if i <= chunk.len() {
                T[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    s
}

/// `len` bytes of `path` from `offset`, read as the request goes. A file
/// that turns out shorter fails the attempt (which is retried).
fn file_body(path: &Path, offset: u64, len: u64, progress: Progress) -> reqwest::Body {
    struct State {
        path: std::path::PathBuf,
        file: Option<tokio::fs::File>,
        offset: u64,
        left: u64,
        progress: Progress,
    }
    let state = State {
        path: path.to_path_buf(),
        file: None,
        offset,
        left: len,
        progress,
    };
    let stream = futures_util::stream::try_unfold(state, |mut s| async move {
        if s.left == 0 {
            return Ok(None);
        }
        if s.file.is_none() {
            let mut f = tokio::fs::File::open(&s.path).await?;
            f.seek(std::io::SeekFrom::Start(s.offset)).await?;
            s.file = Some(f);
        }
        let want = s.left.min(READ_CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        let file = s.file.as_mut().expect("opened above");
        let mut filled = 0;
        while filled < want {
            let n = file.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} got shorter while it was uploaded", s.path.display()),
                ));
            }
            filled += n;
        }
        s.left -= want as u64;
        s.progress.add(want as u64);
        Ok::<_, std::io::Error>(Some((bytes::Bytes::from(buf), s)))
    });
    reqwest::Body::wrap_stream(stream)
}

async fn send(request: RequestBuilder) -> Result<Response, Failure> {
    request
        .send()
        .await
        .map_err(|e| Failure::from_error(&e.without_url()))
}

/// A 2xx answer as it is; an error answer as a [`Failure`] that names S3's
/// error code (`SignatureDoesNotMatch`, `NoSuchBucket`...).
async fn success(response: Response) -> Result<Response, Failure> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let failure = Failure::response(status, response.headers());
    let body = read_bounded(
        response.bytes_stream(),
        None,
        BodyLimit {
            max_size: 64 << 10,
            timeout: Duration::from_secs(10),
        },
    )
    .await
    .unwrap_or_default();
    let code = s3_error_code(&String::from_utf8_lossy(&body));
    Err(match code {
        Some(code) => failure.map_detail(|d| format!("{d} ({code})")),
        None => failure,
    })
}

/// The body of a 2xx answer, bounded.
async fn answer(response: Response) -> Result<Vec<u8>, Failure> {
    let response = success(response).await?;
    let announced = response.content_length();
    read_bounded(response.bytes_stream(), announced, ANSWER_LIMIT)
        .await
        .map_err(|e| e.into_failure(|e: reqwest::Error| Failure::from_error(&e.without_url())))
}

/// `<Code>…</Code>` of an S3 error document, printable and short.
fn s3_error_code(body: &str) -> Option<String> {
    let start = body.find("<Code>")? + "<Code>".len();
    let end = start + body[start..].find("</Code>")?;
    let code: String = body[start..end]
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(64)
        .collect();
    (!code.is_empty()).then_some(code)
}

/// S3's `LastModified`: RFC 3339 (`2024-05-01T12:00:00.000Z`).
fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let ts: jiff::Timestamp = s.parse().ok()?;
    let nanos = ts.as_nanosecond();
    let secs = u64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_stay_under_ten_thousand() {
        assert_eq!(part_size(100 << 20), PART_SIZE);
        assert_eq!(part_size(200 << 30), 21 << 20);
        let size = 1u64 << 40;
        assert!(size.div_ceil(part_size(size)) <= 10_000);
    }

    #[test]
    fn error_codes_and_timestamps() {
        let doc = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>x</Message></Error>";
        assert_eq!(s3_error_code(doc).as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(s3_error_code("<html>"), None);
        assert_eq!(
            parse_timestamp("1970-01-01T00:00:01.500Z"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1500))
        );
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn sse_c_headers() {
        let key = b2c_cmdline::parse_volume("v,encrypt_key=0123456789abcdef0123456789abcdef")
            .unwrap()
            .0
            .encrypt_key
            .unwrap();
        let h = sse_headers(&key);
        assert_eq!(
            h["x-amz-server-side-encryption-customer-key"],
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
        );
        assert_eq!(
            h["x-amz-server-side-encryption-customer-algorithm"],
            "AES256"
        );
        assert_eq!(h["x-amz-server-side-encryption-customer-key-md5"].len(), 24);
    }
}
