//! Reading errors from the HTTP stack: the useful part is a few sources
//! down, and sometimes hidden inside `io::Error`s.

use std::error::Error as StdError;

/// An error and its sources on one line: reqwest's own message is just
/// "error sending request for url (…)", the useful part ("Connection
/// refused") is a few sources down.
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let msg = err.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = err.source();
    }
    s
}

/// Finds an error of type `T` in a source chain. `io::Error` needs a special
/// case: its `source()` skips the error it wraps and returns *that* error's
/// source, so what it wraps is only reachable through `get_ref`. (A rustls
/// certificate error arrives as io::Error(Other, io::Error(InvalidData,
/// rustls::Error)) inside hyper-util's error inside reqwest's.)
pub fn find_in_chain<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => err.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[derive(Debug)]
    struct Marker;
    impl std::fmt::Display for Marker {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("marker")
        }
    }
    impl StdError for Marker {}

    #[test]
    fn finds_what_io_errors_wrap() {
        let wrapped = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, Marker));
        assert!(find_in_chain::<Marker>(&wrapped).is_some());
        assert!(find_in_chain::<Marker>(&io::Error::other("plain")).is_none());
    }

    #[test]
    fn chain_reads_every_source_once() {
        let e = io::Error::other(io::Error::other("Connection refused"));
        assert_eq!(error_chain(&e), "Connection refused");
    }
}
