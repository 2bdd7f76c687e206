//! Unit tests of SPDY/3.1 for exec and port-forward: the header dictionary,
//! header blocks over one zlib stream, frames, hostile input.

use super::*;

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_dictionary_is_the_spdy3_one() {
    let d = &*DICTIONARY;
    assert_eq!(d.len(), 1423);
    assert_eq!(&d[..11], b"\0\0\0\x07options");
    assert_eq!(&d[d.len() - 7..], b",enq=0.");
    // "origin" is the last length-prefixed word, then the status codes.
    let at = d
        .windows(10)
        .position(|w| w == b"\0\0\0\x06origin")
        .unwrap();
    assert_eq!(&d[at + 10..at + 16], b"100101");
}

#[test]
fn header_blocks_round_trip_across_one_zlib_stream() {
    let mut enc = HeaderDeflater::default();
    let mut dec = HeaderInflater::default();
    let a = h(&[
        ("streamtype", "error"),
        ("port", "8080"),
        ("requestid", "0"),
    ]);
    let b = h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]);
    // The second block refers back to the first (one stream).
    let ba = enc.block(&a).unwrap();
    let bb = enc.block(&b).unwrap();
    assert!(bb.len() < ba.len(), "{} vs {}", bb.len(), ba.len());
    assert_eq!(dec.headers(&ba).unwrap(), a);
    assert_eq!(dec.headers(&bb).unwrap(), b);
    assert_eq!(dec.headers(&enc.block(&vec![]).unwrap()).unwrap(), vec![]);
    // A zlib stream starts with its header naming the dictionary (FDICT).
    let fresh = HeaderDeflater::default().block(&a).unwrap();
    assert_eq!(fresh[0] & 0x0f, 8, "deflate");
    assert_ne!(fresh[1] & 0x20, 0, "FDICT set");
}

#[test]
fn values_with_nuls_are_several_values() {
    let mut enc = HeaderDeflater::default();
    let mut dec = HeaderInflater::default();
    let got = dec
        .headers(&enc.block(&h(&[("X-Many", "a\0b")])).unwrap())
        .unwrap();
    assert_eq!(got, h(&[("x-many", "a"), ("x-many", "b")]));
}

#[test]
fn garbage_header_blocks_are_errors_not_panics() {
    let mut dec = HeaderInflater::default();
    assert!(dec.headers(b"\x78\x9c\xff\xff\xff").is_err());
    let mut enc = HeaderDeflater::default();
    let mut dec = HeaderInflater::default();
    // A count that promises more pairs than there are.
    let mut raw = enc.block(&h(&[("a", "b")])).unwrap();
    raw.truncate(raw.len() / 2);
    assert!(dec.headers(&raw).is_err() || dec.headers(&[]).is_err());
    assert!(parse_pairs(&[0, 0, 0, 2, 0, 0, 0, 1, b'a']).is_err());
}

#[tokio::test]
async fn frames_round_trip() {
    let frames = vec![
        Frame::SynStream {
            stream: 1,
            associated: 0,
            priority: 2,
            flags: 0,
            headers: h(&[("streamtype", "data"), ("port", "80")]),
        },
        Frame::SynReply {
            stream: 1,
            flags: 0,
            headers: vec![],
        },
        Frame::Data {
            stream: 1,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hello"),
        },
        Frame::RstStream {
            stream: 3,
            status: CANCEL,
        },
        Frame::Settings {
            flags: 0,
            entries: vec![(0, 7, 65536)],
        },
        Frame::Ping { id: 1 },
        Frame::GoAway {
            last_good: 5,
            status: 0,
        },
        Frame::Headers {
            stream: 1,
            flags: FLAG_FIN,
            headers: h(&[("k", "v")]),
        },
        Frame::WindowUpdate {
            stream: 1,
            delta: 1000,
        },
    ];
    let mut w = FrameWriter::default();
    let mut wire = vec![];
    for f in &frames {
        wire.extend(w.encode(f).unwrap());
    }
    let mut r = FrameReader::default();
    let mut input = &wire[..];
    let mut back = vec![];
    while let Some(f) = r.read(&mut input).await.unwrap() {
        back.push(f);
    }
    assert_eq!(back, frames);
}

#[tokio::test]
async fn a_wrong_version_or_oversized_frame_is_refused() {
    let mut r = FrameReader::default();
    let mut v2: &[u8] = &[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
    assert!(matches!(
        r.read(&mut v2).await,
        Err(SpdyError::Protocol(m)) if m.contains("version 2")
    ));
    let mut big: &[u8] = &[0x80, 3, 0, 1, 0, 0x7f, 0xff, 0xff];
    assert!(r.read(&mut big).await.is_err());
    let mut short: &[u8] = &[0x80, 3, 0, 3, 0, 0, 0, 2, 0, 0];
    assert!(r.read(&mut short).await.is_err());
}

/// A client over an in-memory pipe: the session replies, delivers data
/// and FIN, answers pings and ends with the connection.
#[tokio::test]
async fn the_server_session_replies_and_carries_data() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (stx, mut srx) = mpsc::channel(8);
    let session = tokio::spawn(serve(server, stx));
    let (mut crd, mut cwr) = tokio::io::split(client);
    let mut w = FrameWriter::default();
    let mut r = FrameReader::default();
    let mut put = |f: Frame| w.encode(&f).unwrap();
    let mut wire = put(Frame::SynStream {
        stream: 1,
        associated: 0,
        priority: 0,
        flags: 0,
        headers: h(&[("streamtype", "data")]),
    });
    wire.extend(put(Frame::Data {
        stream: 1,
        flags: 0,
        data: Bytes::from_static(b"ping?"),
    }));
    wire.extend(put(Frame::Ping { id: 7 }));
    wire.extend(put(Frame::Data {
        stream: 1,
        flags: FLAG_FIN,
        data: Bytes::new(),
    }));
    // An even (server-side) id from a client is refused.
    wire.extend(put(Frame::SynStream {
        stream: 2,
        associated: 0,
        priority: 0,
        flags: 0,
        headers: vec![],
    }));
    cwr.write_all(&wire).await.unwrap();
    let mut s = srx.recv().await.unwrap();
    assert_eq!((s.id, header(&s.headers, "streamtype")), (1, Some("data")));
    assert_eq!(
        s.incoming.recv().await,
        Some(Incoming::Data(Bytes::from_static(b"ping?")))
    );
    assert_eq!(s.incoming.recv().await, Some(Incoming::Fin));
    s.out.send(b"pong").await.unwrap();
    s.out.finish().await.unwrap();
    let mut seen = vec![];
    while seen.len() < 5 {
        seen.push(r.read(&mut crd).await.unwrap().unwrap());
    }
    assert!(
        matches!(&seen[0], Frame::SynReply { stream: 1, .. }),
        "{seen:?}"
    );
    assert!(seen.contains(&Frame::Ping { id: 7 }), "{seen:?}");
    assert!(seen.contains(&Frame::RstStream {
        stream: 2,
        status: PROTOCOL_ERROR
    }));
    assert!(seen.contains(&Frame::Data {
        stream: 1,
        flags: 0,
        data: Bytes::from_static(b"pong")
    }));
    assert!(seen.contains(&Frame::Data {
        stream: 1,
        flags: FLAG_FIN,
        data: Bytes::new()
    }));
    drop(cwr);
    drop(crd);
    drop(s);
    session.await.unwrap().unwrap();
}

/// A client opening more streams than a session may have gets
/// `REFUSED_STREAM`; a large frame reaches the stream in 32 KiB chunks.
#[tokio::test]
async fn streams_are_capped_and_frames_chunked() {
    let (client, server) = tokio::io::duplex(1 << 20);
    let (stx, mut srx) = mpsc::channel(MAX_STREAMS + 8);
    let session = tokio::spawn(serve(server, stx));
    let (mut crd, mut cwr) = tokio::io::split(client);
    let mut w = FrameWriter::default();
    let mut r = FrameReader::default();
    let mut wire = vec![];
    for i in 0..=MAX_STREAMS as u32 {
        wire.extend(
            w.encode(&Frame::SynStream {
                stream: 2 * i + 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![],
            })
            .unwrap(),
        );
    }
    wire.extend(
        w.encode(&Frame::Data {
            stream: 1,
            flags: 0,
            data: Bytes::from(vec![7u8; 100_000]),
        })
        .unwrap(),
    );
    cwr.write_all(&wire).await.unwrap();
    let mut refused = None;
    for _ in 0..=MAX_STREAMS {
        match r.read(&mut crd).await.unwrap().unwrap() {
            Frame::RstStream { stream, status } => refused = Some((stream, status)),
            Frame::SynReply { .. } => {}
            f => panic!("{f:?}"),
        }
    }
    assert_eq!(refused, Some((2 * MAX_STREAMS as u32 + 1, REFUSED_STREAM)));
    let mut first = srx.recv().await.unwrap();
    let mut sizes = vec![];
    while sizes.iter().sum::<usize>() < 100_000 {
        match first.incoming.recv().await.unwrap() {
            Incoming::Data(b) => sizes.push(b.len()),
            Incoming::Fin => panic!("no FIN was sent"),
        }
    }
    assert_eq!(
        sizes,
        [DATA_CHUNK, DATA_CHUNK, DATA_CHUNK, 100_000 - 3 * DATA_CHUNK]
    );
    drop(cwr);
    drop(crd);
    drop(first);
    drop(srx);
    let _ = session.await.unwrap();
}
