//! SPDY/3.1 as Kubernetes streaming speaks it: frames, header blocks
//! compressed with zlib and the SPDY/3 dictionary, and the server side of a
//! session that accepts the client's streams.
//!
//! The peer is `moby/spdystream` (kubectl, client-go and the apiserver),
//! which neither sends nor honours WINDOW_UPDATE, so there is no flow
//! control here either: a slow reader of one stream holds the session's
//! reader back, it never drops data. What a session may make the kubelet
//! hold is bounded: one frame being read (at most 16 MiB, the frame
//! format's own limit), [`STREAM_BUFFER`] chunks of 32 KiB per stream, and
//! [`MAX_STREAMS`] open streams (more are refused with `REFUSED_STREAM`).

use std::{collections::HashMap, sync::LazyLock};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    sync::mpsc,
};

/// A failure of the SPDY session or one of its frames.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
    #[error("SPDY header block: {0}")]
    Headers(String),
}

type Result<T> = std::result::Result<T, SpdyError>;

const VERSION: u16 = 3;
/// The last frame of a stream in this direction.
pub const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status codes (SPDY/3 §2.6.3).
pub const PROTOCOL_ERROR: u32 = 1;
pub const CANCEL: u32 = 5;
pub const REFUSED_STREAM: u32 = 3;
/// Streams open at once in one session (exec needs five, a port-forward two
/// per port).
pub const MAX_STREAMS: usize = 64;
/// Chunks queued per stream before the session's reader waits.
pub const STREAM_BUFFER: usize = 32;
/// Control frames larger than this are refused (header blocks are small).
const MAX_CONTROL: usize = 1 << 20;
/// Data frames: spdystream writes at most 16 MiB - 1.
const MAX_DATA: usize = (1 << 24) - 1;
/// What one header block may inflate to.
const MAX_HEADERS: usize = 1 << 20;
/// Data frames this side writes are cut at this size.
const DATA_CHUNK: usize = 32 * 1024;

/// Header names (lower case) and values; a value holding NULs is split
/// into several pairs with the same name.
pub type Headers = Vec<(String, String)>;

/// The value of header `name`, if any.
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this side does not know (ignored, as
    /// SPDY/3 asks).
    Unknown {
        kind: u16,
    },
}

/// The SPDY/3 header-compression dictionary (SPDY/3 draft §2.6.10.1):
/// length-prefixed header names and common values, then a run of text.
/// Built from its parts so that it can be read; 1,423 bytes.
pub static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: [&str; 65] = [
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information",
        "204 No Content",
        "301 Moved Permanently",
        "400 Bad Request",
        "401 Unauthorized",
        "403 Forbidden",
        "404 Not Found",
        "500 Internal Server Error",
        "501 Not Implemented",
        "503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
        "application/xhtml+xml,text/plain,text/javascript,public",
        "privatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
});

/// Inflates the header blocks of one direction of a session: one zlib
/// stream for all of them, each block ending on a sync flush.
#[derive(Debug)]
pub struct HeaderInflater {
    z: Decompress,
}

impl Default for HeaderInflater {
    fn default() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }
}

impl HeaderInflater {
    /// The name/value pairs of one compressed header block.
    pub fn headers(&mut self, block: &[u8]) -> Result<Headers> {
        let raw = self.inflate(block)?;
        parse_pairs(&raw)
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(4 * input.len() + 256);
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADERS {
                    return Err(SpdyError::Headers(format!(
                        "a header block inflates to more than {MAX_HEADERS} bytes"
                    )));
                }
                out.reserve(out.len().max(256));
            }
            let before = self.z.total_in();
            let r = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.z.total_in() - before) as usize;
            input = &input[used..];
            match r {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) if input.is_empty() && out.len() < out.capacity() => return Ok(out),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| SpdyError::Headers(format!("the SPDY dictionary: {e}")))?;
                }
                Err(e) => return Err(SpdyError::Headers(e.to_string())),
            }
        }
    }
}

/// Compresses the header blocks this side writes (one zlib stream, a sync
/// flush after each block).
#[derive(Debug)]
pub struct HeaderDeflater {
    z: Compress,
}

impl Default for HeaderDeflater {
    fn default() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        // A fresh stream always takes a dictionary; the result is its
        // checksum.
        let _ = z.set_dictionary(&DICTIONARY);
        Self { z }
    }
}

impl HeaderDeflater {
    /// The compressed block for `headers`.
    pub fn block(&mut self, headers: &Headers) -> Result<Vec<u8>> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(raw.len() + 64);
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Headers(e.to_string()))?;
            input = &input[(self.z.total_in() - before) as usize..];
            // Done when all input is in and the flush did not fill the
            // buffer (a full buffer may hold back part of the flush).
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn parse_pairs(raw: &[u8]) -> Result<Headers> {
    let bad = |what: &str| SpdyError::Headers(format!("truncated header block ({what})"));
    let mut at = 0usize;
    let u32_at = |at: &mut usize, what: &str| -> Result<usize> {
        let b = raw.get(*at..*at + 4).ok_or_else(|| bad(what))?;
        *at += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = u32_at(&mut at, "count")?;
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let kl = u32_at(&mut at, "name length")?;
        let k = raw.get(at..at + kl).ok_or_else(|| bad("name"))?;
        at += kl;
        let vl = u32_at(&mut at, "value length")?;
        let v = raw.get(at..at + vl).ok_or_else(|| bad("value"))?;
        at += vl;
        let k = String::from_utf8_lossy(k).to_ascii_lowercase();
        for part in v.split(|&b| b == 0) {
            out.push((k.clone(), String::from_utf8_lossy(part).into_owned()));
        }
    }
    Ok(out)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads frames from one direction of a session.
#[derive(Debug, Default)]
pub struct FrameReader {
    inflater: HeaderInflater,
}

impl FrameReader {
    /// The next frame, or `None` at a clean end of the connection.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Option<Frame>> {
        let mut head = [0u8; 8];
        match r.read(&mut head[..1]).await? {
            0 => return Ok(None),
            _ => r.read_exact(&mut head[1..]).await?,
        };
        let flags = head[4];
        let len = (usize::from(head[5]) << 16) | (usize::from(head[6]) << 8) | usize::from(head[7]);
        let control = head[0] & 0x80 != 0;
        let limit = if control { MAX_CONTROL } else { MAX_DATA };
        if len > limit {
            return Err(SpdyError::Protocol(format!(
                "a frame of {len} bytes (at most {limit})"
            )));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        if !control {
            return Ok(Some(Frame::Data {
                stream: be32(&head[..4]) & 0x7fff_ffff,
                flags,
                data: Bytes::from(body),
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(SpdyError::Protocol(format!(
                "SPDY version {version} (this side speaks {VERSION})"
            )));
        }
        self.parse_control(u16::from_be_bytes([head[2], head[3]]), flags, &body)
            .map(Some)
    }

    fn parse_control(&mut self, kind: u16, flags: u8, b: &[u8]) -> Result<Frame> {
        let need = |n: usize| {
            if b.len() < n {
                Err(SpdyError::Protocol(format!(
                    "control frame {kind} of {} bytes, {n} needed",
                    b.len()
                )))
            } else {
                Ok(())
            }
        };
        Ok(match kind {
            1 => {
                need(10)?;
                Frame::SynStream {
                    stream: be32(b) & 0x7fff_ffff,
                    associated: be32(&b[4..]) & 0x7fff_ffff,
                    priority: b[8] >> 5,
                    flags,
                    headers: self.inflater.headers(&b[10..])?,
                }
            }
            2 => {
                need(4)?;
                Frame::SynReply {
                    stream: be32(b) & 0x7fff_ffff,
                    flags,
                    headers: self.inflater.headers(&b[4..])?,
                }
            }
            3 => {
                need(8)?;
                Frame::RstStream {
                    stream: be32(b) & 0x7fff_ffff,
                    status: be32(&b[4..]),
                }
            }
            4 => {
                need(4)?;
                let n = be32(b) as usize;
                need(4 + 8 * n)?;
                Frame::Settings {
                    flags,
                    entries: (0..n)
                        .map(|i| {
                            let e = &b[4 + 8 * i..];
                            (e[0], be32(e) & 0xff_ffff, be32(&e[4..]))
                        })
                        .collect(),
                }
            }
            6 => {
                need(4)?;
                Frame::Ping { id: be32(b) }
            }
            7 => {
                need(4)?;
                Frame::GoAway {
                    last_good: be32(b) & 0x7fff_ffff,
                    status: if b.len() >= 8 { be32(&b[4..]) } else { 0 },
                }
            }
            8 => {
                need(4)?;
                Frame::Headers {
                    stream: be32(b) & 0x7fff_ffff,
                    flags,
                    headers: self.inflater.headers(&b[4..])?,
                }
            }
            9 => {
                need(8)?;
                Frame::WindowUpdate {
                    stream: be32(b) & 0x7fff_ffff,
                    delta: be32(&b[4..]) & 0x7fff_ffff,
                }
            }
            kind => Frame::Unknown { kind },
        })
    }
}

/// Encodes the frames one side writes.
#[derive(Debug, Default)]
pub struct FrameWriter {
    deflater: HeaderDeflater,
}

impl FrameWriter {
    /// The bytes of `frame` on the wire.
    pub fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>> {
        let control = |kind: u16, flags: u8, body: Vec<u8>| -> Vec<u8> {
            let mut out = Vec::with_capacity(8 + body.len());
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(&body);
            out
        };
        let cat = |parts: &[&[u8]]| parts.concat();
        Ok(match frame {
            Frame::SynStream {
                stream,
                associated,
                priority,
                flags,
                headers,
            } => {
                let block = self.deflater.block(headers)?;
                control(
                    1,
                    *flags,
                    cat(&[
                        &stream.to_be_bytes(),
                        &associated.to_be_bytes(),
                        &[priority << 5, 0],
                        &block,
                    ]),
                )
            }
            Frame::SynReply {
                stream,
                flags,
                headers,
            } => {
                let block = self.deflater.block(headers)?;
                control(2, *flags, cat(&[&stream.to_be_bytes(), &block]))
            }
            Frame::RstStream { stream, status } => {
                control(3, 0, cat(&[&stream.to_be_bytes(), &status.to_be_bytes()]))
            }
            Frame::Settings { flags, entries } => {
                let mut body = (entries.len() as u32).to_be_bytes().to_vec();
                for (f, id, v) in entries {
                    body.push(*f);
                    body.extend_from_slice(&id.to_be_bytes()[1..]);
                    body.extend_from_slice(&v.to_be_bytes());
                }
                control(4, *flags, body)
            }
            Frame::Ping { id } => control(6, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway { last_good, status } => control(
                7,
                0,
                cat(&[&last_good.to_be_bytes(), &status.to_be_bytes()]),
            ),
            Frame::Headers {
                stream,
                flags,
                headers,
            } => {
                let block = self.deflater.block(headers)?;
                control(8, *flags, cat(&[&stream.to_be_bytes(), &block]))
            }
            Frame::WindowUpdate { stream, delta } => {
                control(9, 0, cat(&[&stream.to_be_bytes(), &delta.to_be_bytes()]))
            }
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                if data.len() > MAX_DATA {
                    return Err(SpdyError::Protocol(format!(
                        "a data frame of {} bytes",
                        data.len()
                    )));
                }
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                out
            }
            Frame::Unknown { kind } => {
                return Err(SpdyError::Protocol(format!(
                    "cannot write a frame of unknown type {kind}"
                )));
            }
        })
    }
}

/// What arrives on a stream from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Data(Bytes),
    /// The peer will send nothing more (FIN). A channel that closes
    /// without it means the stream was reset or the session ended.
    Fin,
}

/// A stream the peer opened, replied to.
#[derive(Debug)]
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub incoming: mpsc::Receiver<Incoming>,
    pub out: StreamSender,
}

/// The sending half of a stream.
#[derive(Debug, Clone)]
pub struct StreamSender {
    id: u32,
    tx: mpsc::Sender<Frame>,
}

/// The session is gone: nothing more can be sent.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the SPDY session has ended")]
pub struct Closed;

impl StreamSender {
    /// Sends `data` (in frames of at most 32 KiB).
    pub async fn send(&self, data: &[u8]) -> std::result::Result<(), Closed> {
        for chunk in data.chunks(DATA_CHUNK) {
            self.tx
                .send(Frame::Data {
                    stream: self.id,
                    flags: 0,
                    data: Bytes::copy_from_slice(chunk),
                })
                .await
                .map_err(|_| Closed)?;
        }
        Ok(())
    }

    /// Half-closes the stream: this side sends nothing more.
    pub async fn finish(&self) -> std::result::Result<(), Closed> {
        self.tx
            .send(Frame::Data {
                stream: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })
            .await
            .map_err(|_| Closed)
    }

    /// Resets the stream (RST_STREAM with `status`).
    pub async fn reset(&self, status: u32) {
        let _ = self
            .tx
            .send(Frame::RstStream {
                stream: self.id,
                status,
            })
            .await;
    }
}

/// Serves the server side of a session on `io`: every stream the client
/// opens is replied to and handed to `streams`; pings are answered. Returns
/// when the client goes away (EOF or GOAWAY) or breaks the protocol; the
/// streams' channels close then.
pub async fn serve<IO>(io: IO, streams: mpsc::Sender<Stream>) -> Result<()>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(async move {
        let mut enc = FrameWriter::default();
        while let Some(f) = rx.recv().await {
            let bytes = match enc.encode(&f) {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY frame not written");
                    continue;
                }
            };
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
            // Flush when nothing else is queued, so that small frames go
            // out together.
            if rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let result = read_loop(&mut rd, &tx, &streams).await;
    drop(tx);
    // The writer ends once every stream's sender is dropped; a peer that is
    // gone cannot read what is left anyway.
    if result.is_err() {
        writer.abort();
    }
    result
}

async fn read_loop<R: AsyncRead + Unpin>(
    rd: &mut R,
    tx: &mpsc::Sender<Frame>,
    streams: &mpsc::Sender<Stream>,
) -> Result<()> {
    let mut reader = FrameReader::default();
    let mut open: HashMap<u32, mpsc::Sender<Incoming>> = HashMap::new();
    let mut last_id = 0u32;
    let send = |f: Frame| async move {
        tx.send(f)
            .await
            .map_err(|_| SpdyError::Protocol("the writer has stopped".into()))
    };
    while let Some(frame) = reader.read(rd).await? {
        match frame {
            Frame::SynStream {
                stream,
                flags,
                headers,
                ..
            } => {
                if stream % 2 == 0 || stream <= last_id {
                    send(Frame::RstStream {
                        stream,
                        status: PROTOCOL_ERROR,
                    })
                    .await?;
                    continue;
                }
                last_id = stream;
                if open.len() >= MAX_STREAMS {
                    send(Frame::RstStream {
                        stream,
                        status: REFUSED_STREAM,
                    })
                    .await?;
                    continue;
                }
                let (itx, irx) = mpsc::channel(STREAM_BUFFER);
                if flags & FLAG_FIN != 0 {
                    let _ = itx.try_send(Incoming::Fin);
                } else {
                    open.insert(stream, itx);
                }
                send(Frame::SynReply {
                    stream,
                    flags: 0,
                    headers: vec![],
                })
                .await?;
                let s = Stream {
                    id: stream,
                    headers,
                    incoming: irx,
                    out: StreamSender {
                        id: stream,
                        tx: tx.clone(),
                    },
                };
                if streams.send(s).await.is_err() {
                    send(Frame::RstStream {
                        stream,
                        status: CANCEL,
                    })
                    .await?;
                }
            }
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                let Some(itx) = open.get(&stream) else {
                    continue;
                };
                // Queued in chunks, so that what waits per stream is
                // bounded by count, whatever size the frames have.
                let mut gone = false;
                for at in (0..data.len()).step_by(DATA_CHUNK) {
                    let chunk = data.slice(at..(at + DATA_CHUNK).min(data.len()));
                    if itx.send(Incoming::Data(chunk)).await.is_err() {
                        gone = true;
                        break;
                    }
                }
                if gone {
                    // Nobody reads the stream any more.
                    open.remove(&stream);
                    continue;
                }
                if flags & FLAG_FIN != 0
                    && let Some(itx) = open.remove(&stream)
                {
                    let _ = itx.send(Incoming::Fin).await;
                }
            }
            Frame::Headers { stream, flags, .. } => {
                if flags & FLAG_FIN != 0
                    && let Some(itx) = open.remove(&stream)
                {
                    let _ = itx.send(Incoming::Fin).await;
                }
            }
            Frame::RstStream { stream, .. } => {
                open.remove(&stream);
            }
            // The client's pings have odd ids; answers to ours would be
            // even, and this side sends none.
            Frame::Ping { id } if id % 2 == 1 => send(Frame::Ping { id }).await?,
            Frame::GoAway { .. } => return Ok(()),
            Frame::SynReply { .. }
            | Frame::Settings { .. }
            | Frame::Ping { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
