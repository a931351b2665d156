//! Pulls with registry credentials through the Bearer token flow: a gate
//! in front of the real distribution registry answers 401 with a
//! `WWW-Authenticate: Bearer realm=…` challenge, hands a token only to a
//! client that proves the user name and password (HTTP Basic on the realm),
//! and lets requests through only with that token, as Docker Hub, GitLab
//! and Harbor do. (HTTP Basic straight to the registry, htpasswd, is
//! booted in qemu-tests.)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use b2c_oci::{parse_reference, pull, Credential, LayerStore, PullPolicy, RegistryOptions};
use base64::Engine as _;
use common::registry::{Layout, Registry};
use common::{init_logging, Tb};

const USER: &str = "ci-bot";
const PASSWORD: &str = "tok-en-pa55-not-shown";
const TOKEN: &str = "b2c-test-token-1";

/// The gate, on a port of its own; counts the tokens it handed out.
struct Gate {
    port: u16,
    tokens: Arc<AtomicUsize>,
}

impl Gate {
    fn start(upstream: String) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tokens = Arc::new(AtomicUsize::new(0));
        let handed = tokens.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let upstream = upstream.clone();
                let handed = handed.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &upstream, port, &handed);
                });
            }
        });
        Gate { port, tokens }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    port: u16,
    tokens: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let answer = |client: &mut TcpStream, status: &str, extra: &str, body: &str| {
        write!(
            client,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    };
    let authorization = header("authorization").unwrap_or_default();
    if path.starts_with("/token") {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        if authorization == format!("Basic {basic}") {
            tokens.fetch_add(1, Ordering::SeqCst);
            let body = format!(r#"{{"token": "{TOKEN}", "access_token": "{TOKEN}"}}"#);
            return answer(&mut client, "200 OK", "", &body);
        }
        return answer(
            &mut client,
            "401 Unauthorized",
            "",
            r#"{"errors": [{"code": "UNAUTHORIZED", "message": "wrong credentials"}]}"#,
        );
    }
    if authorization != format!("Bearer {TOKEN}") {
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"b2c-test\"\r\n"
        );
        return answer(
            &mut client,
            "401 Unauthorized",
            &challenge,
            r#"{"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}"#,
        );
    }
    // Through to the registry, one request per connection.
    let mut up = TcpStream::connect(upstream)?;
    let method = request_line.split_whitespace().next().unwrap_or("GET");
    write!(
        up,
        "{method} {path} HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n"
    )?;
    for h in &headers {
        let name = h.split(':').next().unwrap_or("").to_ascii_lowercase();
        if !["host", "connection", "authorization"].contains(&name.as_str()) {
            write!(up, "{h}\r\n")?;
        }
    }
    write!(up, "\r\n")?;
    std::io::copy(&mut up, &mut client)?;
    Ok(())
}

fn options(credentials: Vec<Credential>) -> RegistryOptions {
    RegistryOptions {
        tls_verify: false,
        credentials,
        ..RegistryOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_with_credentials() {
    init_logging();
    let reg = Registry::start(None);
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(&tmp.path().join("oci"));
    let img = layout.image(
        "amd64",
        &[Tb::new().file("etc/motd", b"behind a token\n").finish()],
    );
    layout.tag(&[("v1", layout.manifest_desc(&img))]);
    layout.push("v1", &format!("{}/team/private:v1", reg.host()), &[]);
    let gate = Gate::start(reg.host());
    let reference = parse_reference(&format!("docker://{}/team/private:v1", gate.host())).unwrap();
    let store = LayerStore::new(tmp.path().join("store")).unwrap();
    let credential = |password: &str| Credential {
        scope: gate.host(),
        username: USER.into(),
        password: password.into(),
    };

    // No credentials, then a wrong password: denied, saying how to give
    // them, and never quoting the password.
    let anonymous = pull(&reference, &options(vec![]), &store, PullPolicy::Always)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        anonymous.contains("denied") && anonymous.contains("--creds"),
        "{anonymous}"
    );
    let wrong = pull(
        &reference,
        &options(vec![credential("not-it-x9")]),
        &store,
        PullPolicy::Always,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(wrong.contains("denied"), "{wrong}");
    assert!(!wrong.contains("not-it-x9"), "{wrong}");
    assert_eq!(gate.tokens.load(Ordering::SeqCst), 0);

    // The right one: a token from the realm, then the image through it.
    let pulled = pull(
        &reference,
        &options(vec![credential(PASSWORD)]),
        &store,
        PullPolicy::Always,
    )
    .await
    .unwrap();
    assert!(gate.tokens.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        std::fs::read_to_string(pulled.layers[0].join("etc/motd")).unwrap(),
        "behind a token\n"
    );
}
