//! The hub's end of a validator's WebSocket (RFC 6455, server role), on the
//! TCP socket itself.
//!
//! Buffers exist only while bytes are in flight: between frames a session
//! holds no read buffer and no write buffer, so an idle validator costs its
//! session's state and nothing more. (axum's WebSocket kept a read and a
//! write buffer for the socket's whole life, and the write buffer stayed as
//! large as the largest batch it ever wrote.) Frame headers are parsed and
//! formatted by `tungstenite`'s frame module; this module adds what sits
//! around them: reading only when the socket is readable, reassembling
//! fragmented messages, the message size limit, answering pings, and close
//! frames.
//!
//! What a peer gets for breaking the framing rules (docs/protocol.md,
//! "Transport and encoding"): a message over the limit, `frame_too_large` and close 1009
//! (the session's job: [`Incoming::TooBig`]); an unmasked frame, reserved
//! bits or opcodes, a fragmented or oversized control frame, a continuation
//! with nothing to continue: close 1002; a text message that is not UTF-8:
//! close 1007.

use std::io::{self, Cursor};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// Read this much at a time: a result frame is under 1 KiB, so one read
/// usually takes every frame a validator has sent since the last.
const READ_CHUNK: usize = 4096;

/// What a frame the hub writes usually takes (a task is under 1 KiB).
const FRAME_GUESS: usize = 1024;

/// Pongs are queued only while less than this is waiting to be written.
const PONG_ROOM: usize = 4096;

/// The longest header a server writes: 2 bytes, then a 64-bit length.
const MAX_HEADER: usize = 10;

pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_INVALID_DATA: u16 = 1007;

/// What one read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    /// A binary message (the protocol has none).
    Binary,
    /// A ping (answered here) or a pong: nothing to process.
    Control,
    /// The peer's close frame, the end of the stream, or a read error.
    Closed,
    /// A message (or a frame of one) over the size limit; its bytes were
    /// not read.
    TooBig,
    /// The framing rules were broken: the close code to answer with.
    Invalid(u16),
}

/// A fragmented message being put together.
struct Partial {
    text: bool,
    payload: Vec<u8>,
}

/// One validator's WebSocket.
pub struct Socket {
    tcp: TcpStream,
    /// Bytes read and not yet taken as frames, from `rpos` on. No
    /// allocation between frames.
    rbuf: Vec<u8>,
    rpos: usize,
    partial: Option<Box<Partial>>,
    /// Frames to write, from `wpos` on. No allocation once written.
    wbuf: Vec<u8>,
    wpos: usize,
    max_message: usize,
    eof: bool,
    /// Our close frame is queued: the peer's reply gets none.
    close_sent: bool,
    /// Bytes of an oversized frame still to be dropped unread.
    skip: u64,
    /// The framing rules were broken: whatever else comes is dropped.
    broken: bool,
}

impl Socket {
    /// `read_buf`: bytes the HTTP server read past the upgrade request (a
    /// client may send its first frame without waiting for the 101).
    pub fn new(tcp: TcpStream, read_buf: Vec<u8>, max_message: usize) -> Self {
        Self {
            tcp,
            rbuf: read_buf,
            rpos: 0,
            partial: None,
            wbuf: Vec::new(),
            wpos: 0,
            max_message,
            eof: false,
            close_sent: false,
            skip: 0,
            broken: false,
        }
    }

    /// The next message. Cancel-safe: bytes are taken from the socket and
    /// frames from the buffer only between its awaits, never across one.
    /// After [`Incoming::Invalid`], input is read and dropped until the peer
    /// closes; after [`Incoming::TooBig`], the rest of that frame is.
    pub async fn read(&mut self) -> Incoming {
        loop {
            if self.broken {
                self.release_read_buffer();
            } else if let Some(incoming) = self.take_frame() {
                return incoming;
            }
            if self.eof {
                return Incoming::Closed;
            }
            if self.tcp.readable().await.is_err() {
                return Incoming::Closed;
            }
            if self.rpos > 0 {
                // A frame's start is left from the last read: move it to
                // the front before reading the rest after it.
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            self.rbuf.reserve(READ_CHUNK);
            match self.read_some() {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => self.eof = true,
            }
        }
    }

    /// One read into the buffer's spare room. A read that leaves room
    /// unfilled took everything the socket had, so the socket's readiness
    /// is cleared with it (what a `WouldBlock` does): the next `read` waits
    /// for the next arrival instead of first making a read that finds
    /// nothing, which was one wasted system call per incoming frame. Safe
    /// because readiness is edge-triggered and versioned: bytes arriving
    /// after this read raise a new event that the clearing cannot erase,
    /// and a closed read side is never cleared.
    fn read_some(&mut self) -> io::Result<usize> {
        let room = self.rbuf.capacity() - self.rbuf.len();
        let (tcp, rbuf) = (&self.tcp, &mut self.rbuf);
        let mut short = None;
        let got = tcp.try_io(tokio::io::Interest::READABLE, || {
            match tcp.try_read_buf(rbuf) {
                Ok(n) if n > 0 && n < room => {
                    short = Some(n);
                    Err(io::ErrorKind::WouldBlock.into())
                }
                other => other,
            }
        });
        match short {
            Some(n) => Ok(n),
            None => got,
        }
    }

    /// One complete frame from the buffer, if there is one, as what it
    /// means to the session (`None` also for a fragment that completes no
    /// message yet, after which the buffer is looked at again).
    fn take_frame(&mut self) -> Option<Incoming> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min((self.rbuf.len() - self.rpos) as u64);
                self.rpos += n as usize;
                self.skip -= n;
            }
            let unread = &self.rbuf[self.rpos..];
            if unread.is_empty() {
                self.release_read_buffer();
                return None;
            }
            let mut cursor = Cursor::new(unread);
            let (head, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => return None,
                Err(_) => return Some(self.invalid(CLOSE_PROTOCOL)),
            };
            let Some(mask) = head.mask else {
                // Clients must mask every frame (RFC 6455 5.1).
                return Some(self.invalid(CLOSE_PROTOCOL));
            };
            if head.rsv1 || head.rsv2 || head.rsv3 {
                return Some(self.invalid(CLOSE_PROTOCOL));
            }
            let control = matches!(head.opcode, OpCode::Control(_));
            if control && (!head.is_final || len > 125) {
                return Some(self.invalid(CLOSE_PROTOCOL));
            }
            let start = cursor.position() as usize;
            let so_far = self.partial.as_ref().map_or(0, |p| p.payload.len());
            if !control && len.saturating_add(so_far as u64) > self.max_message as u64 {
                // Its payload is dropped, not read into memory; frames after
                // it (the peer's close reply) can still be read.
                let here = (unread.len() - start) as u64;
                let take = here.min(len);
                self.rpos += start + take as usize;
                self.skip = len - take;
                self.partial = None;
                return Some(Incoming::TooBig);
            }
            let len = len as usize;
            if unread.len() - start < len {
                return None;
            }
            let begin = self.rpos + start;
            self.rpos = begin + len;
            let payload = &mut self.rbuf[begin..begin + len];
            unmask(payload, mask);
            let payload = &self.rbuf[begin..begin + len];
            let incoming = match head.opcode {
                OpCode::Control(Control::Ping) => {
                    // Not after our close; and at most a little waiting
                    // output: a peer that pings and never reads gets no
                    // more pongs (RFC 6455 5.5.3 lets only the latest ping
                    // be answered), so its pongs cannot pile up here.
                    if !self.close_sent && self.wbuf.len() - self.wpos <= PONG_ROOM {
                        let mut echo = [0u8; 125];
                        echo[..len].copy_from_slice(payload);
                        self.queue_frame(0x8A, len, |out| out.extend_from_slice(&echo[..len]));
                        self.write_now();
                    }
                    Incoming::Control
                }
                OpCode::Control(Control::Pong) => Incoming::Control,
                OpCode::Control(Control::Close) => {
                    // Answered with the same code (RFC 6455 5.5.1); the
                    // session's last flush sends it.
                    let code = match payload {
                        [] => Some(CLOSE_NORMAL),
                        // The reason, if any, must be UTF-8.
                        [a, b, reason @ ..] if std::str::from_utf8(reason).is_ok() => {
                            Some(u16::from_be_bytes([*a, *b]))
                        }
                        [_, _, ..] => return Some(self.invalid(CLOSE_INVALID_DATA)),
                        [_] => None,
                    };
                    match code {
                        Some(code) if CloseCode::from(code).is_allowed() => {
                            if !self.close_sent {
                                self.queue_close(code, "");
                            }
                            Incoming::Closed
                        }
                        _ => self.invalid(CLOSE_PROTOCOL),
                    }
                }
                OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                    self.invalid(CLOSE_PROTOCOL)
                }
                OpCode::Data(Data::Continue) => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Some(self.invalid(CLOSE_PROTOCOL));
                    };
                    partial.payload.extend_from_slice(payload);
                    if !head.is_final {
                        continue;
                    }
                    let p = self.partial.take().expect("checked above");
                    self.message(p.text, p.payload)
                }
                OpCode::Data(data) => {
                    if self.partial.is_some() {
                        // A new message before the last one ended.
                        return Some(self.invalid(CLOSE_PROTOCOL));
                    }
                    let text = data == Data::Text;
                    if !head.is_final {
                        self.partial = Some(Box::new(Partial {
                            text,
                            payload: payload.to_vec(),
                        }));
                        continue;
                    }
                    let payload = payload.to_vec();
                    self.message(text, payload)
                }
            };
            if self.rpos == self.rbuf.len() {
                self.release_read_buffer();
            }
            return Some(incoming);
        }
    }

    fn message(&mut self, text: bool, payload: Vec<u8>) -> Incoming {
        if !text {
            return Incoming::Binary;
        }
        match String::from_utf8(payload) {
            Ok(s) => Incoming::Text(s),
            Err(_) => self.invalid(CLOSE_INVALID_DATA),
        }
    }

    fn invalid(&mut self, code: u16) -> Incoming {
        self.broken = true;
        Incoming::Invalid(code)
    }

    fn release_read_buffer(&mut self) {
        self.rbuf = Vec::new();
        self.rpos = 0;
    }

    /// Adds one text frame holding `msg` as JSON to what goes out with the
    /// next [`Self::flush`].
    pub fn queue_json(&mut self, msg: &impl Serialize) {
        // Room for a typical frame at once, not grown from nothing by
        // doubling per frame.
        self.wbuf.reserve(FRAME_GUESS);
        let start = self.wbuf.len();
        self.wbuf.resize(start + MAX_HEADER, 0);
        serde_json::to_writer(&mut self.wbuf, msg).expect("messages always serialize");
        let len = self.wbuf.len() - start - MAX_HEADER;
        let head = header_bytes(0x81, len);
        // The header goes right before the payload; the unused part of the
        // room left for it is closed up.
        let gap = MAX_HEADER - head.len();
        if gap > 0 {
            self.wbuf
                .copy_within(start + MAX_HEADER.., start + head.len());
            self.wbuf.truncate(self.wbuf.len() - gap);
        }
        self.wbuf[start..start + head.len()].copy_from_slice(&head);
    }

    /// Adds a close frame (code and reason) to what goes out next.
    pub fn queue_close(&mut self, code: u16, reason: &str) {
        self.close_sent = true;
        let reason = &reason.as_bytes()[..reason.len().min(123)];
        self.queue_frame(0x88, 2 + reason.len(), |out| {
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(reason);
        });
    }

    /// Bytes queued and not yet written.
    pub fn pending_output(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Adds an empty ping to what goes out next.
    pub fn queue_ping(&mut self) {
        self.queue_frame(0x89, 0, |_| {});
    }

    fn queue_frame(&mut self, first: u8, len: usize, payload: impl FnOnce(&mut Vec<u8>)) {
        self.wbuf.extend_from_slice(&header_bytes(first, len));
        payload(&mut self.wbuf);
    }

    /// Writes what the socket takes without waiting (a ping's answer).
    fn write_now(&mut self) {
        while self.wpos < self.wbuf.len() {
            match self.tcp.try_write(&self.wbuf[self.wpos..]) {
                Ok(n) => self.wpos += n,
                Err(_) => return,
            }
        }
        self.release_write_buffer();
    }

    /// Writes everything queued. Not cancel-safe: a caller that gives up
    /// on it (a write timeout) must end the session.
    pub async fn flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.tcp.try_write(&self.wbuf[self.wpos..]) {
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable().await?,
                Err(e) => return Err(e),
            }
        }
        self.release_write_buffer();
        Ok(())
    }

    fn release_write_buffer(&mut self) {
        self.wbuf = Vec::new();
        self.wpos = 0;
    }
}

/// A server frame's header (never masked): FIN and opcode, then the length.
fn header_bytes(first: u8, len: usize) -> HeaderBytes {
    let head = FrameHeader {
        is_final: first & 0x80 != 0,
        opcode: OpCode::from(first & 0x0F),
        ..FrameHeader::default()
    };
    let mut out = HeaderBytes::default();
    head.format(len as u64, &mut out)
        .expect("a server header fits in 10 bytes");
    out
}

/// A header's bytes, without an allocation.
#[derive(Default)]
struct HeaderBytes {
    bytes: [u8; MAX_HEADER],
    len: usize,
}

impl std::ops::Deref for HeaderBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl io::Write for HeaderBytes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(MAX_HEADER - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&buf[..n]);
        self.len += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// The opening handshake (RFC 6455 4.2), checked as axum's `WebSocketUpgrade`
/// checks it: what to upgrade with, or the refusal.
pub struct Handshake {
    accept: String,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

impl Handshake {
    pub fn check(req: &mut axum::extract::Request) -> Result<Self, (StatusCode, &'static str)> {
        let bad = |why: &'static str| (StatusCode::BAD_REQUEST, why);
        let h = req.headers();
        if !header_has_token(h, header::CONNECTION, "upgrade") {
            return Err(bad("Connection header did not include 'upgrade'"));
        }
        if !header_is(h, header::UPGRADE, "websocket") {
            return Err(bad("`Upgrade` header did not include 'websocket'"));
        }
        if !header_is(h, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(bad("`Sec-WebSocket-Version` header did not include '13'"));
        }
        let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(bad("`Sec-WebSocket-Key` header missing"));
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
            return Err((
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ));
        };
        Ok(Self { accept, on_upgrade })
    }

    /// The 101 response, and the socket it leads to (once the response is
    /// out).
    pub fn accept(
        self,
        max_message: usize,
    ) -> (
        Response,
        impl std::future::Future<Output = io::Result<Socket>> + Send,
    ) {
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, HeaderValue::from_static("upgrade"))
            .header(header::UPGRADE, HeaderValue::from_static("websocket"))
            .header(header::SEC_WEBSOCKET_ACCEPT, self.accept)
            .body(axum::body::Body::empty())
            .expect("a valid response");
        let on_upgrade = self.on_upgrade;
        let socket = async move {
            let upgraded = on_upgrade.await.map_err(io::Error::other)?;
            let parts = upgraded
                .downcast::<hyper_util::rt::TokioIo<TcpStream>>()
                .map_err(|_| io::Error::other("the connection is not a TCP socket"))?;
            Ok(Socket::new(
                parts.io.into_inner(),
                parts.read_buf.to_vec(),
                max_message,
            ))
        };
        (response, socket)
    }
}

fn header_is(h: &HeaderMap, name: header::HeaderName, value: &str) -> bool {
    h.get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    /// A hub-side socket and the raw TCP client of it.
    async fn pair(max: usize) -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (
            Socket::new(accepted.unwrap().0, Vec::new(), max),
            client.unwrap(),
        )
    }

    /// The same, with a WebSocket client (tungstenite's, masking its frames).
    async fn ws_pair(max: usize) -> (Socket, WebSocketStream<TcpStream>) {
        let (sock, tcp) = pair(max).await;
        (
            sock,
            WebSocketStream::from_raw_socket(tcp, Role::Client, None).await,
        )
    }

    fn idle(sock: &Socket) -> bool {
        sock.rbuf.capacity() == 0 && sock.wbuf.capacity() == 0 && sock.partial.is_none()
    }

    /// A client frame, masked, as bytes.
    fn client_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let head = FrameHeader {
            is_final: first & 0x80 != 0,
            rsv1: first & 0x40 != 0,
            opcode: OpCode::from(first & 0x0F),
            mask: masked.then_some([1, 2, 3, 4]),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        head.format(payload.len() as u64, &mut out).unwrap();
        let mut body = payload.to_vec();
        if masked {
            unmask(&mut body, [1, 2, 3, 4]);
        }
        out.extend_from_slice(&body);
        out
    }

    #[tokio::test]
    async fn messages_both_ways_and_no_buffer_held_between_them() {
        let (mut sock, mut client) = ws_pair(1 << 20).await;
        for len in [10usize, 200, 70_000] {
            let text = "x".repeat(len);
            client.send(Message::text(text.clone())).await.unwrap();
            assert_eq!(sock.read().await, Incoming::Text(text.clone()));
            assert!(idle(&sock), "a read buffer is held after the frame");
            // Every length form of the server's header (7-bit, 16-bit, 64-bit).
            sock.queue_json(&text);
            sock.flush().await.unwrap();
            assert!(idle(&sock), "a write buffer is held after the flush");
            let got = client.next().await.unwrap().unwrap();
            assert_eq!(got, Message::text(format!("\"{text}\"")));
        }
        // Several frames in one read come out one by one.
        for i in 0..3 {
            client.feed(Message::text(format!("m{i}"))).await.unwrap();
        }
        client.flush().await.unwrap();
        for i in 0..3 {
            assert_eq!(sock.read().await, Incoming::Text(format!("m{i}")));
        }
        assert!(idle(&sock));
    }

    #[tokio::test]
    async fn a_fragmented_message_is_put_together_and_pings_are_answered() {
        let (mut sock, mut client) = ws_pair(1 << 20).await;
        let part = |data: &str, op: Data, fin: bool| {
            Message::Frame(Frame::message(
                data.as_bytes().to_vec(),
                OpCode::Data(op),
                fin,
            ))
        };
        client.send(part("hel", Data::Text, false)).await.unwrap();
        // A control frame may come between the fragments.
        client
            .send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
        client
            .send(part("lo ", Data::Continue, false))
            .await
            .unwrap();
        client
            .send(part("world", Data::Continue, true))
            .await
            .unwrap();
        assert_eq!(sock.read().await, Incoming::Control);
        assert_eq!(sock.read().await, Incoming::Text("hello world".into()));
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Pong(b"are you there".to_vec().into())
        );
        client.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(sock.read().await, Incoming::Binary);
        assert!(idle(&sock));
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_too_big_whole_or_in_fragments() {
        let (mut sock, mut client) = ws_pair(1024).await;
        client
            .send(Message::text("y".repeat(300_000)))
            .await
            .unwrap();
        assert_eq!(sock.read().await, Incoming::TooBig);
        // Its payload is dropped unread, however many reads it spans; the
        // frame after it (a close reply, in the hub) is read as usual.
        client.send(Message::text("after")).await.unwrap();
        assert_eq!(sock.read().await, Incoming::Text("after".into()));
        assert!(sock.rbuf.capacity() <= 2 * READ_CHUNK);

        let (mut sock, mut client) = ws_pair(1024).await;
        let frag = |op, fin| Message::Frame(Frame::message(vec![b'z'; 600], OpCode::Data(op), fin));
        client.send(frag(Data::Text, false)).await.unwrap();
        client.send(frag(Data::Continue, true)).await.unwrap();
        assert_eq!(sock.read().await, Incoming::TooBig);
    }

    #[tokio::test]
    async fn broken_framing_gets_its_close_code() {
        let cases: [(Vec<u8>, u16); 6] = [
            (client_frame(0x81, b"unmasked", false), CLOSE_PROTOCOL),
            (client_frame(0xC1, b"rsv1 set", true), CLOSE_PROTOCOL),
            (client_frame(0x83, b"reserved opcode", true), CLOSE_PROTOCOL),
            (client_frame(0x09, b"fragmented ping", true), CLOSE_PROTOCOL),
            (
                client_frame(0x80, b"nothing to continue", true),
                CLOSE_PROTOCOL,
            ),
            (client_frame(0x81, &[0xff, 0xfe], true), CLOSE_INVALID_DATA),
        ];
        for (bytes, code) in cases {
            let (mut sock, mut tcp) = pair(1024).await;
            tcp.write_all(&bytes).await.unwrap();
            assert_eq!(sock.read().await, Incoming::Invalid(code), "{bytes:?}");
            // Nothing after it is believed: read and dropped until the end.
            tcp.write_all(&client_frame(0x81, b"more", true))
                .await
                .unwrap();
            drop(tcp);
            assert_eq!(sock.read().await, Incoming::Closed);
        }
    }

    #[tokio::test]
    async fn a_close_frame_is_answered_once_with_its_code() {
        let (mut sock, mut client) = ws_pair(1024).await;
        client
            .send(Message::Close(Some(
                tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: CloseCode::Away,
                    reason: "bye".into(),
                },
            )))
            .await
            .unwrap();
        assert_eq!(sock.read().await, Incoming::Closed);
        sock.flush().await.unwrap();
        match client.next().await.unwrap().unwrap() {
            Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
            other => panic!("expected a close frame, got {other:?}"),
        }
        // We close first: the peer's reply is not answered again.
        let (mut sock, mut client) = ws_pair(1024).await;
        sock.queue_close(1008, "rate_limited");
        sock.flush().await.unwrap();
        match client.next().await.unwrap().unwrap() {
            Message::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 1008);
                assert_eq!(f.reason, "rate_limited");
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
        // tungstenite replies to our close on its next poll (and would then
        // wait for the server to drop the connection); that reply ends the
        // read.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), client.next()).await;
        assert_eq!(sock.read().await, Incoming::Closed);
        assert!(sock.wbuf.is_empty(), "a second close frame was queued");
        drop(client);
        assert_eq!(sock.read().await, Incoming::Closed);
    }

    #[tokio::test]
    async fn pongs_do_not_pile_up_for_a_peer_that_never_reads() {
        let (mut sock, mut tcp) = pair(1024).await;
        let ping = client_frame(0x89, &[7u8; 125], true);
        const PINGS: usize = 60_000; // ~7.9 MB of pongs: more than both socket buffers
        let writer = tokio::spawn(async move {
            let mut burst = Vec::new();
            for _ in 0..100 {
                burst.extend_from_slice(&ping);
            }
            for _ in 0..PINGS / 100 {
                tcp.write_all(&burst).await.unwrap();
            }
            tcp // never read: the pongs stay in the kernel, then here
        });
        for _ in 0..PINGS {
            assert_eq!(sock.read().await, Incoming::Control);
        }
        assert!(
            sock.wbuf.len() - sock.wpos <= PONG_ROOM + 127,
            "{} bytes of pongs waiting",
            sock.wbuf.len() - sock.wpos
        );
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn after_our_close_pings_get_no_pong_and_a_close_reason_must_be_utf8() {
        let (mut sock, mut tcp) = pair(1024).await;
        sock.queue_close(1000, "");
        sock.flush().await.unwrap();
        tcp.write_all(&client_frame(0x89, b"still there?", true))
            .await
            .unwrap();
        assert_eq!(sock.read().await, Incoming::Control);
        assert!(sock.wbuf.is_empty(), "a pong after our close frame");

        let (mut sock, mut tcp) = pair(1024).await;
        tcp.write_all(&client_frame(0x88, &[0x03, 0xE8, 0xFF, 0xFE], true))
            .await
            .unwrap();
        assert_eq!(sock.read().await, Incoming::Invalid(CLOSE_INVALID_DATA));
    }

    #[tokio::test]
    async fn a_frame_split_across_reads_waits_for_its_rest() {
        let (mut sock, mut tcp) = pair(1 << 16).await;
        let bytes = client_frame(0x81, "a frame in three parts".as_bytes(), true);
        let (a, rest) = bytes.split_at(1);
        let (b, c) = rest.split_at(7);
        let reader = tokio::spawn(async move {
            let got = sock.read().await;
            (got, sock)
        });
        for part in [a, b, c] {
            tcp.write_all(part).await.unwrap();
            tcp.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let (got, sock) = reader.await.unwrap();
        assert_eq!(got, Incoming::Text("a frame in three parts".into()));
        assert!(idle(&sock));
    }
}
