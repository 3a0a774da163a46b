//! The ubus object `provisioner`, provided by the daemon itself: a small client of ubusd's
//! socket (its wire protocol in [`wire`], [`blob`]) that registers the object with its
//! methods ([`methods`]) and turns each call into the control socket's [`Request`], sent
//! down the same order channel to the daemon loop; the reply, the control protocol's
//! reply object, goes back as blobmsg ([`ser`]), so `ubus call` prints the JSON that
//! `provisionerctl --json` does.
//!
//! No ubusd (not started yet, restarted): one line in the log, and another try every
//! [`RETRY`]; the daemon never waits for it.

pub mod blob;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub mod methods;
pub mod ser;
pub mod wire;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::control::protocol::ReplyLine;
use crate::control::{Failure, FailureKind, Order, Reply, Request};
use wire::Header;

/// Where ubusd listens on OpenWrt.
pub const DEFAULT_SOCKET: &str = "/var/run/ubus/ubus.sock";

/// The object's name (ubusd keeps one object of a name: the rpcd plugin must be gone).
pub const OBJECT: &str = "provisioner";

/// How long between tries to reach ubusd.
pub const RETRY: Duration = Duration::from_secs(2);

/// How long ubusd may take to greet us and take the object.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// The longest message read into memory: calls carry a few arguments. A longer one is
/// skipped (a call is answered "invalid argument"), never buffered.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Calls handed to the daemon loop and not answered yet; more wait in the socket.
const IN_FLIGHT: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("ubusd closed the connection")]
    Closed,
    #[error("ubusd did not answer within {HANDSHAKE:?}")]
    Timeout,
    #[error("ubusd sent what is not a ubus message")]
    Protocol,
    #[error("ubusd refused the object {OBJECT} (status {0}: is another provider running?)")]
    Refused(u32),
    #[error("the daemon is stopping")]
    Stopping,
}

/// Keeps the object on the bus at `socket`, reconnecting whenever ubusd goes; returns only
/// when the daemon loop is gone.
pub async fn serve(socket: PathBuf, orders: mpsc::Sender<Order>) {
    let mut absent = false;
    loop {
        match Session::open(&socket).await {
            Ok(mut s) => {
                info!("on ubus ({}) as the object {OBJECT}", socket.display());
                absent = false;
                match s.run(&orders).await {
                    Err(Error::Stopping) => return,
                    Err(e) => warn!("ubus: {e}; reconnecting every {RETRY:?}"),
                    Ok(()) => {}
                }
            }
            Err(Error::Stopping) => return,
            Err(e) if !absent => {
                warn!(
                    "no ubus object: {}: {e}; trying again every {RETRY:?}",
                    socket.display()
                );
                absent = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// What came in: a message whole in the buffer (its length), or one too long to read,
/// skipped (its header).
enum Frame {
    Message(Header, usize),
    Skipped(Header),
}

/// Reads messages into one bounded buffer.
struct Inbox {
    buf: Box<[u8]>,
    len: usize,
    /// Bytes of a skipped message still to discard.
    skip: usize,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            buf: vec![0; MAX_MESSAGE].into_boxed_slice(),
            len: 0,
            skip: 0,
        }
    }

    /// The next message in the buffer, if it is all there; [`Inbox::consume`] it after.
    fn frame(&mut self) -> Result<Option<Frame>, Error> {
        if self.skip > 0 {
            let n = self.skip.min(self.len);
            self.consume(n);
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        let Some(prefix) = self.buf[..self.len].first_chunk::<{ wire::PREFIX }>() else {
            return Ok(None);
        };
        let (h, total) = wire::prefix(prefix).ok_or(Error::Protocol)?;
        if total > self.buf.len() {
            self.skip = total;
            return Ok(Some(Frame::Skipped(h)));
        }
        Ok((self.len >= total).then_some(Frame::Message(h, total)))
    }

    /// The top attribute's payload of the message [`Inbox::frame`] gave.
    fn payload(&self, total: usize) -> &[u8] {
        &self.buf[wire::PREFIX..total]
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Reads what is there (cancel safe: one read).
    async fn fill(&mut self, r: &mut (impl AsyncRead + Unpin)) -> Result<(), Error> {
        match r.read(&mut self.buf[self.len..]).await? {
            0 => Err(Error::Closed),
            n => {
                self.len += n;
                Ok(())
            }
        }
    }

    /// The next whole message, reading as needed.
    async fn next(&mut self, r: &mut (impl AsyncRead + Unpin)) -> Result<(Header, usize), Error> {
        loop {
            match self.frame()? {
                Some(Frame::Message(h, n)) => return Ok((h, n)),
                Some(Frame::Skipped(_)) => continue,
                None => self.fill(r).await?,
            }
        }
    }
}

/// A call handed to the daemon loop, waiting for its reply.
struct Call {
    seq: u16,
    peer: u32,
    /// False for a call sent "no reply".
    answer: bool,
    reply: oneshot::Receiver<Reply>,
}

struct Session {
    stream: UnixStream,
    inbox: Inbox,
    /// Our object's id, as ubusd numbered it.
    objid: u32,
    /// Outgoing messages (reused: grows to the largest reply).
    out: Vec<u8>,
}

impl Session {
    /// Connects, and registers the object.
    async fn open(socket: &Path) -> Result<Session, Error> {
        let stream = UnixStream::connect(socket).await?;
        let mut s = Session {
            stream,
            inbox: Inbox::new(),
            objid: 0,
            out: Vec::with_capacity(4096),
        };
        tokio::time::timeout(HANDSHAKE, s.register())
            .await
            .map_err(|_| Error::Timeout)??;
        Ok(s)
    }

    async fn register(&mut self) -> Result<(), Error> {
        let (h, n) = self.inbox.next(&mut self.stream).await?;
        if h.kind != wire::HELLO {
            return Err(Error::Protocol);
        }
        self.inbox.consume(n);

        const SEQ: u16 = 1;
        self.out.clear();
        let at = wire::begin(&mut self.out, wire::ADD_OBJECT, SEQ, 0);
        blob::put_str(&mut self.out, wire::ATTR_OBJPATH, OBJECT);
        let sig = blob::start(&mut self.out);
        methods::signature(&mut self.out);
        blob::end(&mut self.out, sig, blob::word(wire::ATTR_SIGNATURE));
        wire::end(&mut self.out, at);
        self.stream.write_all(&self.out).await?;

        // DATA with the object's id, then STATUS; anything else before them is not ours.
        let mut objid = None;
        loop {
            let (h, n) = self.inbox.next(&mut self.stream).await?;
            let a = wire::attrs(self.inbox.payload(n));
            let get = |id: u8| a[id as usize].and_then(|a| a.u32());
            match (h.kind, h.seq) {
                (wire::DATA, SEQ) => objid = get(wire::ATTR_OBJID).or(objid),
                (wire::STATUS, SEQ) => {
                    let status = get(wire::ATTR_STATUS).unwrap_or(wire::UNKNOWN_ERROR);
                    self.inbox.consume(n);
                    return match (status, objid) {
                        (wire::OK, Some(id)) => {
                            self.objid = id;
                            Ok(())
                        }
                        (wire::OK, None) => Err(Error::Protocol),
                        (s, _) => Err(Error::Refused(s)),
                    };
                }
                _ => {}
            }
            self.inbox.consume(n);
        }
    }

    /// Answers calls until ubusd goes (an error) or the daemon stops.
    async fn run(&mut self, orders: &mpsc::Sender<Order>) -> Result<(), Error> {
        let mut calls: VecDeque<Call> = VecDeque::with_capacity(IN_FLIGHT);
        let (mut read, mut write) = self.stream.split();
        loop {
            // What is in the buffer first, as long as there is room for calls.
            while calls.len() < IN_FLIGHT {
                let Some(frame) = self.inbox.frame()? else {
                    break;
                };
                self.out.clear();
                match frame {
                    Frame::Skipped(h) => {
                        if h.kind == wire::INVOKE {
                            wire::status(
                                &mut self.out,
                                h.seq,
                                h.peer,
                                self.objid,
                                wire::INVALID_ARGUMENT,
                            );
                        }
                    }
                    Frame::Message(h, n) => {
                        if h.kind == wire::INVOKE {
                            let payload = &self.inbox.buf[wire::PREFIX..n];
                            if let Some((request, answer)) =
                                invoke(self.objid, h, payload, &mut self.out)
                            {
                                let (tx, rx) = oneshot::channel();
                                let order = Order { request, reply: tx };
                                orders.send(order).await.map_err(|_| Error::Stopping)?;
                                calls.push_back(Call {
                                    seq: h.seq,
                                    peer: h.peer,
                                    answer,
                                    reply: rx,
                                });
                            }
                        }
                        // Else: notifications of subscribers, answers to nothing we
                        // asked: nothing to say.
                        self.inbox.consume(n);
                    }
                }
                if !self.out.is_empty() {
                    write.write_all(&self.out).await?;
                }
            }
            let room = calls.len() < IN_FLIGHT;
            tokio::select! {
                got = self.inbox.fill(&mut read), if room => got?,
                reply = next_reply(&mut calls) => {
                    let call = calls.pop_front().expect("a call was waiting");
                    let reply = reply.unwrap_or_else(|_| {
                        Failure::new(FailureKind::Stopping, "the daemon is stopping").into()
                    });
                    if call.answer {
                        self.out.clear();
                        answer(&mut self.out, self.objid, call.seq, call.peer, &reply);
                        write.write_all(&self.out).await?;
                    }
                }
            }
        }
    }
}

/// The first waiting call's reply (never, if none waits).
async fn next_reply(calls: &mut VecDeque<Call>) -> Result<Reply, oneshot::error::RecvError> {
    match calls.front_mut() {
        Some(c) => (&mut c.reply).await,
        None => std::future::pending().await,
    }
}

/// An INVOKE: the request it makes (and whether the caller wants the reply), or (into
/// `out`) the answer it gets at once: a usage error as a reply, a ubus status for what is
/// not a call of ours.
fn invoke(objid: u32, h: Header, payload: &[u8], out: &mut Vec<u8>) -> Option<(Request, bool)> {
    let a = wire::attrs(payload);
    let status = |out: &mut Vec<u8>, s| wire::status(out, h.seq, h.peer, objid, s);
    if a[wire::ATTR_OBJID as usize].and_then(|a| a.u32()) != Some(objid) {
        status(out, wire::NOT_FOUND);
        return None;
    }
    let no_reply = a[wire::ATTR_NO_REPLY as usize]
        .and_then(|a| a.data.first().copied())
        .is_some_and(|b| b != 0);
    let method = a[wire::ATTR_METHOD as usize]
        .and_then(|m| m.str())
        .and_then(methods::find);
    let Some(method) = method else {
        status(out, wire::METHOD_NOT_FOUND);
        return None;
    };
    let Some(data) = a[wire::ATTR_DATA as usize] else {
        status(out, wire::INVALID_ARGUMENT);
        return None;
    };
    match methods::request(method, blob::Attrs::new(data.data)) {
        Ok(request) => Some((request, !no_reply)),
        Err(_) if no_reply => None,
        Err(usage) => {
            let reply = Reply::Error(Failure::new(FailureKind::Usage, usage));
            answer(out, objid, h.seq, h.peer, &reply);
            None
        }
    }
}

/// A call's answer: DATA with the reply object, then STATUS 0 (as rpcd's plugins answer:
/// a failure is in the object). A reply that cannot go (over ubusd's limit) is a failure
/// object saying so.
pub fn answer(out: &mut Vec<u8>, objid: u32, seq: u16, peer: u32, reply: &Reply) {
    let start = out.len();
    if let Err(e) = data(out, objid, seq, peer, reply) {
        out.truncate(start);
        warn!("ubus: a reply that cannot be sent: {e}");
        let f = Reply::Error(Failure::new(FailureKind::Failed, format!("the reply {e}")));
        // Small: it fits.
        let _ = data(out, objid, seq, peer, &f);
    }
    wire::status(out, seq, peer, objid, wire::OK);
}

#[derive(Debug, thiserror::Error)]
enum AnswerError {
    #[error("is over ubusd's limit of {} bytes", wire::MAX_MSGLEN)]
    TooLong,
    #[error("has no blobmsg form: {0}")]
    Form(#[from] ser::Error),
}

fn data(
    out: &mut Vec<u8>,
    objid: u32,
    seq: u16,
    peer: u32,
    reply: &Reply,
) -> Result<(), AnswerError> {
    let at = wire::begin(out, wire::DATA, seq, peer);
    blob::put_u32(out, wire::ATTR_OBJID, objid);
    let d = blob::start(out);
    ser::write_fields(out, &ReplyLine(reply))?;
    if !blob::end(out, d, blob::word(wire::ATTR_DATA)) || !wire::end(out, at) {
        return Err(AnswerError::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
