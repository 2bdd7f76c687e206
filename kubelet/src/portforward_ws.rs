//! Port-forward over WebSocket channels: what the official Python and
//! JavaScript clients speak (`v4.channel.k8s.io`, its base64 variant
//! `v4.base64.channel.k8s.io`, or no subprotocol at all), as kubelet's
//! `handleWebSocketStreams` serves it.
//!
//! The ports come from the `port` query parameters (the apiserver turns
//! the client's `ports` into them). Port *i* owns channel `2i` (data, both
//! ways) and `2i+1` (errors, kubelet to client); each channel's first
//! message is the port number, two bytes little-endian. Every message
//! starts with its channel byte (in the base64 framing, the channel as an
//! ASCII digit and the rest base64-encoded in a text message). One
//! connection to the pod per port and per WebSocket: once a direction
//! ends, the other gets a second to finish (containerd's rule); once every
//! port is done the WebSocket is closed.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::mpsc,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

use super::portforward::{Target, dial};

/// The binary channel protocol.
pub const V4_BINARY: &str = "v4.channel.k8s.io";
/// The same with base64 text messages.
pub const V4_BASE64: &str = "v4.base64.channel.k8s.io";
/// A channel is one byte and each port takes two.
pub const MAX_PORTS: usize = 128;
/// How long the other direction may go on once one has ended.
const LINGER: Duration = Duration::from_secs(1);
/// Bytes per message from the pod.
const CHUNK: usize = 32 * 1024;

/// How channel messages are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Binary messages, the channel as the first byte.
    Binary,
    /// Text messages, the channel as an ASCII digit, the payload base64.
    Base64,
}

impl Framing {
    fn frame(self, channel: u8, payload: &[u8]) -> Message {
        match self {
            Self::Binary => {
                let mut b = Vec::with_capacity(payload.len() + 1);
                b.push(channel);
                b.extend_from_slice(payload);
                Message::binary(b)
            }
            Self::Base64 => {
                let mut s = String::with_capacity(payload.len() * 4 / 3 + 5);
                s.push(char::from(b'0' + channel));
                base64::engine::general_purpose::STANDARD.encode_string(payload, &mut s);
                Message::text(s)
            }
        }
    }

    /// The channel and payload of a client message, if it is one.
    fn unframe(self, m: Message) -> Option<(u8, Vec<u8>)> {
        match (self, m) {
            (Self::Binary, Message::Binary(b)) => {
                let (&c, rest) = b.split_first()?;
                Some((c, rest.to_vec()))
            }
            // Kubelet reads a text frame's bytes as it reads a binary one.
            (Self::Binary, Message::Text(t)) => {
                let (&c, rest) = t.as_bytes().split_first()?;
                Some((c, rest.to_vec()))
            }
            (Self::Base64, Message::Text(t)) => {
                let (c, rest) = t.as_bytes().split_first()?;
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .ok()?;
                Some((c.checked_sub(b'0')?, payload))
            }
            _ => None,
        }
    }
}

/// The ports of a request: every `port` value, each possibly a
/// comma-separated list, each 1–65535; at least one, at most
/// [`MAX_PORTS`]. The messages are kubelet's.
pub fn ports(query: &[(String, String)]) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for (k, v) in query.iter().filter(|(k, _)| k == "port") {
        if v.is_empty() {
            return Err(format!("query parameter {k:?} cannot be empty"));
        }
        for p in v.split(',') {
            let port: u16 = p
                .parse()
                .map_err(|e| format!("unable to parse {v:?} as a port: {e}"))?;
            if port < 1 {
                return Err(format!("port {v:?} must be > 0"));
            }
            out.push(port);
        }
    }
    if out.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    if out.len() > MAX_PORTS {
        return Err(format!(
            "{} ports asked for: at most {MAX_PORTS} fit the channel numbers",
            out.len()
        ));
    }
    Ok(out)
}

/// Serves one WebSocket: announces each port on its two channels, forwards
/// each to the pod, closes when all are done or the client goes.
pub(super) async fn session<S>(
    ws: WebSocketStream<S>,
    framing: Framing,
    ports: Vec<u16>,
    target: Arc<Target>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let mut inputs = Vec::with_capacity(ports.len());
    let mut forwards = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        // Channels fit a byte: `ports` bounds the count.
        let data = u8::try_from(2 * i).unwrap_or(u8::MAX - 1);
        for c in [data, data + 1] {
            let _ = out_tx.send(framing.frame(c, &port.to_le_bytes())).await;
        }
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(32);
        inputs.push(Some(in_tx));
        forwards.spawn(forward(
            Arc::clone(&target),
            port,
            Channels {
                data,
                framing,
                out: out_tx.clone(),
            },
            in_rx,
        ));
    }
    drop(out_tx);
    let read = async {
        while let Some(Ok(m)) = stream.next().await {
            if m.is_close() {
                break;
            }
            let Some((c, payload)) = framing.unframe(m) else {
                continue;
            };
            // Errors channels are written by the kubelet only.
            let Some(slot) = inputs.get_mut(usize::from(c / 2)).filter(|_| c % 2 == 0) else {
                continue;
            };
            if let Some(tx) = slot
                && tx.send(payload).await.is_err()
            {
                *slot = None;
            }
        }
        // The client is gone or closed: every pod connection sees EOF.
        inputs.clear();
        std::future::pending::<()>().await;
    };
    let all_done = async { while forwards.join_next().await.is_some() {} };
    tokio::select! {
        () = read => {}
        () = all_done => {}
    }
    forwards.abort_all();
    let _ = writer.await;
}

/// Where one port's output goes.
struct Channels {
    data: u8,
    framing: Framing,
    out: mpsc::Sender<Message>,
}

/// One port: dial the pod, then pod → client and client → pod until one
/// ends, the other lingering at most [`LINGER`].
async fn forward(target: Arc<Target>, port: u16, ch: Channels, mut input: mpsc::Receiver<Vec<u8>>) {
    let conn = match dial(target.netns.clone(), port).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                target.pod, target.uid
            );
            tracing::info!("{msg}");
            let _ = ch
                .out
                .send(ch.framing.frame(ch.data + 1, msg.as_bytes()))
                .await;
            return;
        }
    };
    let (mut rd, mut wr) = conn.into_split();
    let up = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let m = ch.framing.frame(ch.data, &buf[..n]);
                    if ch.out.send(m).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let down = async {
        while let Some(b) = input.recv().await {
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        () = &mut up => { let _ = tokio::time::timeout(LINGER, down).await; }
        () = &mut down => { let _ = tokio::time::timeout(LINGER, up).await; }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn ports_as_kubelet_reads_them() {
        assert_eq!(ports(&q(&[("port", "80")])), Ok(vec![80]));
        assert_eq!(
            ports(&q(&[("port", "80,8080"), ("port", "9")])),
            Ok(vec![80, 8080, 9])
        );
        assert!(ports(&[]).unwrap_err().contains("required"));
        assert!(ports(&q(&[("port", "")])).unwrap_err().contains("empty"));
        assert!(ports(&q(&[("port", "0")])).unwrap_err().contains("> 0"));
        assert!(ports(&q(&[("port", "70000")])).is_err());
        assert!(ports(&q(&[("port", "-1")])).is_err());
        let many = vec!["1"; MAX_PORTS + 1].join(",");
        assert!(ports(&q(&[("port", &many)])).is_err());
        let most = vec!["1"; MAX_PORTS].join(",");
        assert_eq!(
            ports(&q(&[("port", &most)])).map(|p| p.len()),
            Ok(MAX_PORTS)
        );
    }

    #[test]
    fn frames_both_ways() {
        let m = Framing::Binary.frame(2, &[0x50, 0x00]);
        assert_eq!(m, Message::binary(vec![2, 0x50, 0]));
        assert_eq!(Framing::Binary.unframe(m), Some((2, vec![0x50, 0])));
        let m = Framing::Base64.frame(1, b"hi");
        assert_eq!(m, Message::text("1aGk="));
        assert_eq!(Framing::Base64.unframe(m), Some((1, b"hi".to_vec())));
        // Wrong kinds, empty messages and bad base64 are not channel data.
        assert_eq!(Framing::Binary.unframe(Message::binary(vec![])), None);
        assert_eq!(
            Framing::Binary.unframe(Message::text("\u{0}hi")),
            Some((0, b"hi".to_vec()))
        );
        assert_eq!(Framing::Base64.unframe(Message::binary(vec![0, 1])), None);
        assert_eq!(Framing::Base64.unframe(Message::text("0!!")), None);
        assert_eq!(Framing::Base64.unframe(Message::text("")), None);
    }
}
