//! Splitting `/proc/cmdline` into `key[=value]` options.

/// One option of the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub key: String,
    /// `None` for a flag written without `=`.
    pub value: Option<String>,
}

/// Splits on whitespace outside double quotes and removes the quotes, as the
/// kernel does when it hands parameters to init (boot2container relies on
/// this: `b2c.run="-ti image cmd"` is one option).
pub fn tokenize(cmdline: &str) -> Vec<Token> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => Token {
                key: k.to_string(),
                value: Some(v.to_string()),
            },
            None => Token {
                key: w,
                value: None,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: Option<&str>) -> Token {
        Token {
            key: k.into(),
            value: v.map(Into::into),
        }
    }

    #[test]
    fn splits_on_whitespace_outside_quotes() {
        let t = tokenize(
            "console=ttyS0  b2c.run=\"-ti docker://r.example/a:1 sh -c 'echo hi'\" b2c.pipefail\n",
        );
        assert_eq!(
            t,
            vec![
                kv("console", Some("ttyS0")),
                kv(
                    "b2c.run",
                    Some("-ti docker://r.example/a:1 sh -c 'echo hi'")
                ),
                kv("b2c.pipefail", None),
            ]
        );
    }

    #[test]
    fn value_may_contain_equal_signs_and_empty_quotes() {
        let t = tokenize("b2c.run=\"-e A=B img\" x=\"\"");
        assert_eq!(
            t,
            vec![kv("b2c.run", Some("-e A=B img")), kv("x", Some(""))]
        );
    }

    #[test]
    fn unterminated_quote_runs_to_the_end() {
        assert_eq!(tokenize("a=\"b c"), vec![kv("a", Some("b c"))]);
    }
}
