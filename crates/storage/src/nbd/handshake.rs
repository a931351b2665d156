//! The NBD handshake, fixed newstyle, done by b2c over TCP before the
//! socket is handed to the kernel (which only speaks the transmission
//! phase): `NBD_OPT_GO` for the export, and `NBD_OPT_EXPORT_NAME` with a
//! server that does not know `NBD_OPT_GO`. Generic over the stream so
//! that the protocol is tested without a network.
//!
//! Reference: the NBD protocol document (`doc/proto.md` of the nbd
//! project).

use std::io::{self, Read, Write};

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OLDSTYLE: u64 = 0x0000_4202_8186_1253;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const CFLAG_FIXED_NEWSTYLE: u32 = 1;
const CFLAG_NO_ZEROES: u32 = 2;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_GO: u32 = 7;

const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_FLAG_ERROR: u32 = 1 << 31;
const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;

const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags the kernel is told about.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// The server allows several connections to one export.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// The largest reply payload read: option replies are small.
const MAX_REPLY: u32 = 64 << 10;

/// What the server said about the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export {
    pub size: u64,
    /// Transmission flags (`NBD_FLAG_*`), for the kernel.
    pub flags: u16,
    /// The server's preferred block size, when it said (`NBD_INFO_BLOCK_SIZE`).
    pub block_size: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not an NBD server (it sent {0:#018x})")]
    NotNbd(u64),
    #[error("the server speaks only the old NBD protocol (oldstyle), which names no export")]
    Oldstyle,
    #[error("the server does not speak fixed newstyle NBD")]
    NotFixedNewstyle,
    #[error("the server refused export {name:?}: {reason}")]
    Refused { name: String, reason: String },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn error_name(kind: u32) -> &'static str {
    match kind & !REP_FLAG_ERROR {
        1 => "unsupported option",
        2 => "forbidden by policy",
        3 => "invalid request",
        4 => "not supported on this platform",
        5 => "TLS required",
        6 => "unknown export",
        7 => "server shutting down",
        8 => "block size requirements not supported",
        9 => "too big",
        _ => "error",
    }
}

/// Does the handshake on `stream` for export `name` (the empty name is
/// the server's default export). On success the stream is in the
/// transmission phase.
pub fn handshake<S: Read + Write>(stream: &mut S, name: &str) -> Result<Export, HandshakeError> {
    let magic = read_u64(stream)?;
    if magic != NBDMAGIC {
        return Err(HandshakeError::NotNbd(magic));
    }
    match read_u64(stream)? {
        IHAVEOPT => {}
        OLDSTYLE => return Err(HandshakeError::Oldstyle),
        other => return Err(HandshakeError::NotNbd(other)),
    }
    let server_flags = read_u16(stream)?;
    if server_flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(HandshakeError::NotFixedNewstyle);
    }
    let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
    let client_flags = CFLAG_FIXED_NEWSTYLE | if no_zeroes { CFLAG_NO_ZEROES } else { 0 };
    stream.write_all(&client_flags.to_be_bytes())?;

    // NBD_OPT_GO: the name, then the one extra piece of information asked
    // for (the export's size and flags always come).
    let mut data = Vec::new();
    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    stream.write_all(&option(OPT_GO, &data))?;
    stream.flush()?;

    let mut export: Option<(u64, u16)> = None;
    let mut block_size = None;
    loop {
        let magic = read_u64(stream)?;
        if magic != REPLY_MAGIC {
            return Err(HandshakeError::Protocol(format!(
                "option reply magic {magic:#x}"
            )));
        }
        let opt = read_u32(stream)?;
        let kind = read_u32(stream)?;
        let len = read_u32(stream)?;
        if opt != OPT_GO {
            return Err(HandshakeError::Protocol(format!(
                "a reply to option {opt}, not to NBD_OPT_GO"
            )));
        }
        if len > MAX_REPLY {
            return Err(HandshakeError::Protocol(format!("a reply of {len} bytes")));
        }
        let mut payload = vec![0; len as usize];
        stream.read_exact(&mut payload)?;
        match kind {
            REP_ACK => break,
            REP_INFO if payload.len() >= 2 => {
                let info = u16::from_be_bytes([payload[0], payload[1]]);
                match (info, &payload[2..]) {
                    (INFO_EXPORT, [s @ .., f0, f1]) if s.len() == 8 => {
                        let size = u64::from_be_bytes(s.try_into().expect("8 bytes"));
                        export = Some((size, u16::from_be_bytes([*f0, *f1])));
                    }
                    (INFO_BLOCK_SIZE, rest) if rest.len() == 12 => {
                        let preferred = u32::from_be_bytes(rest[4..8].try_into().expect("4"));
                        block_size = Some(preferred);
                    }
                    _ => {}
                }
            }
            REP_ERR_UNSUP => return export_name(stream, name, no_zeroes),
            kind if kind & REP_FLAG_ERROR != 0 => {
                let message = String::from_utf8_lossy(&payload).into_owned();
                return Err(HandshakeError::Refused {
                    name: name.to_string(),
                    reason: if message.is_empty() {
                        error_name(kind).to_string()
                    } else {
                        format!("{} ({message})", error_name(kind))
                    },
                });
            }
            _ => {}
        }
    }
    let (size, flags) = export.ok_or_else(|| {
        HandshakeError::Protocol("NBD_OPT_GO succeeded without the export's size".into())
    })?;
    Ok(Export {
        size,
        flags,
        block_size,
    })
}

/// The old way in: `NBD_OPT_EXPORT_NAME`, answered by the size and flags
/// (then 124 zero bytes unless both sides said no zeroes). A refusal is a
/// closed connection.
fn export_name<S: Read + Write>(
    stream: &mut S,
    name: &str,
    no_zeroes: bool,
) -> Result<Export, HandshakeError> {
    stream.write_all(&option(OPT_EXPORT_NAME, name.as_bytes()))?;
    stream.flush()?;
    let closed = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => HandshakeError::Refused {
            name: name.to_string(),
            reason: "it closed the connection".into(),
        },
        _ => HandshakeError::Io(e),
    };
    let size = read_u64(stream).map_err(closed)?;
    let flags = read_u16(stream).map_err(closed)?;
    if !no_zeroes {
        let mut zeroes = [0; 124];
        stream.read_exact(&mut zeroes)?;
    }
    Ok(Export {
        size,
        flags,
        block_size: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted server: what it sends, and what the client wrote.
    struct Script {
        input: io::Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn greeting(flags: u16) -> Vec<u8> {
        let mut v = NBDMAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&IHAVEOPT.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        v
    }

    fn reply(opt: u32, kind: u32, data: &[u8]) -> Vec<u8> {
        let mut v = REPLY_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&opt.to_be_bytes());
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    fn script(parts: &[Vec<u8>]) -> Script {
        Script {
            input: io::Cursor::new(parts.concat()),
            written: Vec::new(),
        }
    }

    fn info_export(size: u64, flags: u16) -> Vec<u8> {
        let mut v = INFO_EXPORT.to_be_bytes().to_vec();
        v.extend_from_slice(&size.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        v
    }

    #[test]
    fn go_gives_size_flags_and_block_size() {
        let mut block = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        for n in [1u32, 4096, 32 << 20] {
            block.extend_from_slice(&n.to_be_bytes());
        }
        let mut s = script(&[
            greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES),
            reply(OPT_GO, REP_INFO, &info_export(1 << 30, 0x10b)),
            reply(OPT_GO, REP_INFO, &block),
            reply(OPT_GO, REP_ACK, &[]),
        ]);
        let export = handshake(&mut s, "cache").unwrap();
        assert_eq!(
            export,
            Export {
                size: 1 << 30,
                flags: 0x10b,
                block_size: Some(4096),
            }
        );
        // Client flags, then NBD_OPT_GO with the name and one info request.
        let w = &s.written;
        assert_eq!(&w[..4], &3u32.to_be_bytes());
        assert_eq!(&w[4..12], &IHAVEOPT.to_be_bytes());
        assert_eq!(&w[12..16], &OPT_GO.to_be_bytes());
        assert_eq!(&w[16..20], &(4 + 5 + 2 + 2u32).to_be_bytes());
        assert_eq!(&w[20..24], &5u32.to_be_bytes());
        assert_eq!(&w[24..29], b"cache");
        assert_eq!(&w[29..33], &[0, 1, 0, 3]);
    }

    #[test]
    fn falls_back_to_export_name() {
        let mut answer = (2u64 << 30).to_be_bytes().to_vec();
        answer.extend_from_slice(&3u16.to_be_bytes());
        answer.extend_from_slice(&[0; 124]);
        let mut s = script(&[
            greeting(FLAG_FIXED_NEWSTYLE),
            reply(OPT_GO, REP_ERR_UNSUP, &[]),
            answer,
        ]);
        let export = handshake(&mut s, "").unwrap();
        assert_eq!((export.size, export.flags), (2 << 30, 3));
        assert_eq!(&s.written[..4], &1u32.to_be_bytes());
        let tail = &s.written[s.written.len() - 16..];
        assert_eq!(&tail[8..12], &OPT_EXPORT_NAME.to_be_bytes());
        assert_eq!(&tail[12..16], &0u32.to_be_bytes());
    }

    #[test]
    fn refusals_and_strangers() {
        let mut s = script(&[
            greeting(FLAG_FIXED_NEWSTYLE),
            reply(OPT_GO, REP_FLAG_ERROR | 6, b"no such export"),
        ]);
        let e = handshake(&mut s, "swap").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the server refused export \"swap\": unknown export (no such export)"
        );
        let mut s = script(&[b"HTTP/1.1 400 Bad".to_vec()]);
        assert!(matches!(
            handshake(&mut s, ""),
            Err(HandshakeError::NotNbd(_))
        ));
        let mut old = NBDMAGIC.to_be_bytes().to_vec();
        old.extend_from_slice(&OLDSTYLE.to_be_bytes());
        assert!(matches!(
            handshake(&mut script(&[old]), ""),
            Err(HandshakeError::Oldstyle)
        ));
        assert!(matches!(
            handshake(&mut script(&[greeting(0)]), ""),
            Err(HandshakeError::NotFixedNewstyle)
        ));
        // A refusal of NBD_OPT_EXPORT_NAME is a closed connection.
        let mut s = script(&[
            greeting(FLAG_FIXED_NEWSTYLE),
            reply(OPT_GO, REP_ERR_UNSUP, &[]),
        ]);
        assert!(matches!(
            handshake(&mut s, "x"),
            Err(HandshakeError::Refused { .. })
        ));
    }
}
