//! Trying again: exponential backoff, or the delay the server asked for.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Failure;

/// The longest wait a server's `Retry-After` can impose: a boot that waits
/// longer for an answer is better off failing and saying why.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How often, and for how long, transient failures (transport errors,
/// 5xx, 408, 429, stalls) are retried. Other answers and TLS failures are
/// final.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each further one (up
    /// to `max_delay`), unless the server said how long to wait
    /// (`Retry-After`, up to [`MAX_RETRY_AFTER`]).
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Transient failures are ridden out for this long: no retry starts
    /// later than this after the first attempt did (a `Retry-After` that
    /// would end beyond it ends the retries at once). `None`: only
    /// `attempts` bounds them.
    pub give_up_after: Option<Duration>,
}

impl Default for RetryPolicy {
    /// 3 attempts, waiting 2 s then 4 s: about 10 s with the requests.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
            give_up_after: None,
        }
    }
}

impl RetryPolicy {
    /// Retries for `time` (at most 100 attempts): 1 s, 2 s, 4 s… between
    /// them, never more than 15 s unless the server asks for more. What a
    /// registry pull uses (`b2c.pull_retry`).
    pub fn for_time(time: Duration) -> RetryPolicy {
        RetryPolicy {
            attempts: 100,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15),
            give_up_after: Some(time),
        }
    }

    /// The backoff after the `failed_attempt`th attempt (1-based).
    pub fn delay(&self, failed_attempt: u32) -> Duration {
        self.first_delay
            .saturating_mul(2u32.saturating_pow(failed_attempt.saturating_sub(1)))
            .min(self.max_delay)
    }
}

/// A failure [`with_retries`] can judge.
pub trait Retryable: fmt::Display {
    fn retryable(&self) -> bool;
    /// How long the server asked to wait, if it did.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl Retryable for Failure {
    fn retryable(&self) -> bool {
        Failure::retryable(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the policy's
/// attempts or time are used up, waiting the server's `Retry-After` when
/// it gave one and the policy's backoff otherwise. Each retry is a console
/// warning: `{what} failed ({error}); retrying in N s (attempt i/n)` (or
/// `(attempt i, for at most N s)` with a time bound). Returns the last
/// failure and how many attempts were made.
pub async fn with_retries<T, E, F, Fut>(
    policy: &RetryPolicy,
    what: &(dyn fmt::Display + Sync),
    mut attempt: F,
) -> Result<T, (E, u32)>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = tokio::time::Instant::now();
    let attempts = policy.attempts.max(1);
    let mut tries = 1;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable() && tries < attempts => {
                let delay = e
                    .retry_after()
                    .map_or_else(|| policy.delay(tries), |d| d.min(MAX_RETRY_AFTER));
                let bound = match policy.give_up_after {
                    Some(limit) if start.elapsed() + delay > limit => return Err((e, tries)),
                    Some(limit) => format!("for at most {} s", limit.as_secs()),
                    None => format!("/{attempts}"),
                };
                let sep = if policy.give_up_after.is_some() {
                    ", "
                } else {
                    ""
                };
                log::warn!(
                    "{what} failed ({e}); retrying in {:.1} s (attempt {}{sep}{bound})",
                    delay.as_secs_f32(),
                    tries + 1
                );
                tokio::time::sleep(delay).await;
                tries += 1;
            }
            Err(e) => return Err((e, tries)),
        }
    }
}

/// A `Retry-After` value (delay in seconds, or an HTTP date) as a wait
/// from `now`, capped at [`MAX_RETRY_AFTER`]. A date in the past is no
/// wait; something else is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only too many of them fail to parse.
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let at = parse_http_date(value)?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The three forms of RFC 9110's HTTP-date: `Sun, 06 Nov 1994 08:49:37 GMT`
/// (the one servers send), `Sunday, 06-Nov-94 08:49:37 GMT` and
/// `Sun Nov  6 08:49:37 1994`.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let (day, month, year, time) = match words.as_slice() {
        [_, d, m, y, t, "GMT"] if words[0].ends_with(',') => (*d, *m, y.parse().ok()?, *t),
        [_, dmy, t, "GMT"] if words[0].ends_with(',') => {
            let mut parts = dmy.split('-');
            let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
            // Two digits: the century that is not more than 50 years ahead.
            let y: i64 = y.parse().ok()?;
            (d, m, if y < 70 { 2000 + y } else { 1900 + y }, *t)
        }
        [_, m, d, t, y] => (*d, *m, y.parse().ok()?, *t),
        _ => return None,
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let mut hms = time.split(':').map(|n| n.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some()
        || !(1..=31).contains(&day)
        || !(0..24).contains(&h)
        || !(0..60).contains(&m)
        || !(0..=60).contains(&sec)
        || year < 1970
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days * 86_400 + h * 3600 + m * 60 + sec).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn backoff_doubles() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_secs(2));
        assert_eq!(p.delay(2), Duration::from_secs(4));
        assert_eq!(p.delay(3), Duration::from_secs(8));
        // Capped, and no overflow however many attempts.
        assert_eq!(p.delay(5), Duration::from_secs(30));
        assert_eq!(p.delay(100), Duration::from_secs(30));
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        // RFC 9110's example: 784111777 s after the epoch.
        for s in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(s), Some(at(784_111_777)), "{s}");
        }
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 23:59:60 GMT"),
            Some(at(1_835_481_600))
        );
        for bad in [
            "",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_seconds_dates_and_absurd_values() {
        let now = at(784_111_777);
        let secs = |s| parse_retry_after(s, now);
        assert_eq!(secs("0"), Some(Duration::ZERO));
        assert_eq!(secs(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(secs("60"), Some(MAX_RETRY_AFTER));
        // Absurd values are capped.
        assert_eq!(secs("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(secs("99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            secs("Sun, 06 Nov 1994 08:50:07 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(secs("Mon, 07 Nov 1994 08:49:37 GMT"), Some(MAX_RETRY_AFTER));
        // In the past: no wait.
        assert_eq!(secs("Sat, 05 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        for bad in ["-1", "1.5", "soon", "5 s", ""] {
            assert_eq!(secs(bad), None, "{bad:?}");
        }
    }

    struct Flaky(&'static str, Option<Duration>);

    impl fmt::Display for Flaky {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Retryable for Flaky {
        fn retryable(&self) -> bool {
            self.0 != "final"
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_what_the_server_asked_then_backs_off() {
        let policy = RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let start = tokio::time::Instant::now();
        let mut answers = vec![
            Err(Flaky("busy", Some(Duration::from_secs(600)))),
            Err(Flaky("busy", Some(Duration::from_secs(7)))),
            Err(Flaky("down", None)),
            Ok(42),
        ]
        .into_iter();
        let v = with_retries(&policy, &"x", || {
            std::future::ready(answers.next().unwrap())
        })
        .await
        .unwrap_or_else(|_| panic!("failed"));
        assert_eq!(v, 42);
        // Capped 600 s, then 7 s, then the third backoff step.
        assert_eq!(
            start.elapsed(),
            MAX_RETRY_AFTER + Duration::from_secs(7 + 4)
        );

        let mut calls = 0;
        let (e, tries) = with_retries(&policy, &"x", || {
            calls += 1;
            std::future::ready(Err::<(), _>(Flaky("final", None)))
        })
        .await
        .unwrap_err();
        assert_eq!((e.0, tries, calls), ("final", 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_time_bound_ends_the_retries() {
        let policy = RetryPolicy::for_time(Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let (_, tries) = with_retries(&policy, &"x", || {
            calls += 1;
            std::future::ready(Err::<(), _>(Flaky("down", None)))
        })
        .await
        .unwrap_err();
        // 1+2+4+8+15+15 = 45 s of waiting; the next 15 s would end at 60 s,
        // which is still within the bound; the one after is not.
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        assert_eq!((tries, calls), (8, 8));

        // A Retry-After beyond the bound gives up at once.
        let policy = RetryPolicy::for_time(Duration::from_secs(30));
        let start = tokio::time::Instant::now();
        let (_, tries) = with_retries(&policy, &"x", || {
            std::future::ready(Err::<(), _>(Flaky("busy", Some(Duration::from_secs(45)))))
        })
        .await
        .unwrap_err();
        assert_eq!((tries, start.elapsed()), (1, Duration::ZERO));
    }
}
