//! `rudder-echo`: the server behind Rudder's `rudder/echo` and `nginx` test
//! images. Std only, so it links statically and runs as PID 1.
//!
//! - HTTP (default port 8080, `nginx` image: 80): `GET /` answers
//!   `hostname=… pod_ip=… client=… version=…` lines (with `ECHO_PAGE=nginx`,
//!   as the `nginx` image sets, inside nginx's default "Welcome to nginx!"
//!   page, also at `/index.html`); `/hostname`, `/clientip`
//!   (`ip:port` of the peer as seen by the server, to check source-IP
//!   preservation), `/healthz` answer just that. Keep-alive is honoured.
//! - TCP (default 9000): echoes bytes back.
//! - UDP (default 9000): `hostname` → hostname, `clientip` → peer `ip:port`,
//!   anything else is echoed.
//!
//! The pod IP is `$POD_IP` if set, else the local address the connection
//! arrived on. `$ECHO_VERSION` (set by the image) is reported as `version`.
//! SIGTERM and SIGINT end the process at once with status 0.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut http = 8080u16;
    let mut tcp = 9000u16;
    let mut udp = 9000u16;
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<u16>().ok());
        match (args[i].as_str(), value) {
            ("--http-port", Some(v)) => http = v,
            ("--tcp-port", Some(v)) => tcp = v,
            ("--udp-port", Some(v)) => udp = v,
            ("-h" | "--help", _) => {
                println!(
                    "usage: rudder-echo [--http-port N] [--tcp-port N] [--udp-port N]  (0 disables)"
                );
                return;
            }
            (flag, _) => {
                eprintln!(
                    "rudder-echo: bad argument {flag:?} (expected --http-port/--tcp-port/--udp-port N)"
                );
                std::process::exit(2);
            }
        }
        i += 2;
    }
    install_signal_handlers();

    let mut handles = vec![];
    if http != 0 {
        let l = listen_tcp(http);
        handles.push(thread::spawn(move || serve_tcp(&l, handle_http)));
    }
    if tcp != 0 {
        let l = listen_tcp(tcp);
        handles.push(thread::spawn(move || serve_tcp(&l, handle_echo)));
    }
    if udp != 0 {
        let s = UdpSocket::bind(("0.0.0.0", udp))
            .unwrap_or_else(|e| die(&format!("bind udp/{udp}: {e}")));
        handles.push(thread::spawn(move || serve_udp(&s)));
    }
    eprintln!(
        "rudder-echo: http={http} tcp={tcp} udp={udp} hostname={}",
        hostname()
    );
    for h in handles {
        let _ = h.join();
    }
}

fn die(msg: &str) -> ! {
    eprintln!("rudder-echo: {msg}");
    std::process::exit(1);
}

extern "C" fn exit_now(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) };
}

fn install_signal_handlers() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only calls the async-signal-safe `_exit`.
        unsafe { libc::signal(sig, exit_now as *const () as libc::sighandler_t) };
    }
}

fn listen_tcp(port: u16) -> TcpListener {
    TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| die(&format!("bind tcp/{port}: {e}")))
}

fn serve_tcp(l: &TcpListener, handler: fn(TcpStream)) {
    for conn in l.incoming() {
        match conn {
            Ok(s) => {
                thread::spawn(move || handler(s));
            }
            Err(e) => eprintln!("rudder-echo: accept: {e}"),
        }
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn pod_ip(local: Option<SocketAddr>) -> String {
    std::env::var("POD_IP")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| local.map(|a| a.ip().to_string()))
        .unwrap_or_default()
}

fn handle_echo(mut s: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// The echo lines of `GET /`.
fn echo_lines(local: Option<SocketAddr>, client: &str) -> String {
    format!(
        "hostname={}\npod_ip={}\nclient={client}\nversion={}\n",
        hostname(),
        pod_ip(local),
        std::env::var("ECHO_VERSION").unwrap_or_default()
    )
}

/// nginx's default page (its title and heading are what clients and their
/// tests look for), the echo lines each on a line of their own inside.
fn nginx_page(lines: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n<h1>Welcome to nginx!</h1>\n<p>If you see this page, the nginx web server is successfully installed and\nworking. Further configuration is required.</p>\n<pre>\n{lines}</pre>\n<p><em>Thank you for using nginx.</em></p>\n</body>\n</html>\n"
    )
}

fn handle_http(s: TcpStream) {
    let peer = s.peer_addr().ok();
    let local = s.local_addr().ok();
    let Ok(write_half) = s.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::new(s);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut keep_alive = request_line.contains("HTTP/1.1");
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
                match k.as_str() {
                    "connection" if v == "close" => keep_alive = false,
                    "connection" if v == "keep-alive" => keep_alive = true,
                    "content-length" => content_length = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        if content_length > 0 {
            let mut body = vec![0u8; content_length.min(1 << 20)];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let path = path.split('?').next().unwrap_or("/");
        let client = peer.map(|p| p.to_string()).unwrap_or_default();
        let nginx = std::env::var("ECHO_PAGE").is_ok_and(|v| v == "nginx");
        let (status, body) = match path {
            "/" | "/index.html" if nginx => ("200 OK", nginx_page(&echo_lines(local, &client))),
            "/" => ("200 OK", echo_lines(local, &client)),
            "/hostname" => ("200 OK", hostname()),
            "/clientip" => ("200 OK", client),
            "/healthz" => ("200 OK", "ok".to_string()),
            _ => ("404 Not Found", format!("no route {path}\n")),
        };
        let conn = if keep_alive { "keep-alive" } else { "close" };
        let (server, kind) = if nginx {
            ("Server: nginx\r\n", "text/html")
        } else {
            ("", "text/plain")
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\n{server}Content-Type: {kind}\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(resp.as_bytes()).is_err() || !keep_alive {
            return;
        }
    }
}

fn serve_udp(s: &UdpSocket) {
    let mut buf = [0u8; 65536];
    loop {
        let Ok((n, peer)) = s.recv_from(&mut buf) else {
            continue;
        };
        let msg = &buf[..n];
        let reply = match std::str::from_utf8(msg).map(str::trim) {
            Ok("hostname") => hostname().into_bytes(),
            Ok("clientip") => peer.to_string().into_bytes(),
            _ => msg.to_vec(),
        };
        let _ = s.send_to(&reply, peer);
    }
}
