//! A peer connection on a shard, plain or over TLS (`[security] peer_tls`): whole for the
//! handshake, then split in a reader and a writer that run as two tasks. Over TLS the halves
//! share one rustls session; each borrows it only between `await`s. What the reader's
//! records make rustls want to send (a key update's answer, an alert) is sent by the writer:
//! the reader raises the writer's signal.

use std::cell::RefCell;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use monoio::io::{AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use rustls::Connection;

use crate::signal::Signal;
use crate::tls::{absorb, read_ciphertext, take_plaintext, StreamIo, TlsSocket};

/// A whole peer connection.
pub(crate) enum PeerStream {
    Plain(TcpStream),
    Tls(Box<TlsSocket>),
}

impl PeerStream {
    pub(crate) fn raw_fd(&self) -> RawFd {
        match self {
            PeerStream::Plain(socket) => socket.as_raw_fd(),
            PeerStream::Tls(tls) => tls.socket.as_raw_fd(),
        }
    }

    /// Splits the connection; `writer_signal` wakes the task that writes on the writer half.
    pub(crate) fn split(self, writer_signal: Rc<Signal>) -> (PeerReader, PeerWriter) {
        match self {
            PeerStream::Plain(socket) => {
                let (reader, writer) = socket.into_split();
                (PeerReader::Plain(reader), PeerWriter::Plain(writer))
            }
            PeerStream::Tls(tls) => {
                let TlsSocket { socket, session, .. } = *tls;
                let session = Rc::new(RefCell::new(session));
                let (reader, writer) = socket.into_split();
                let reader = TlsReader {
                    socket: reader,
                    session: Rc::clone(&session),
                    ciphertext: Vec::new(),
                    writer_signal,
                };
                let writer = TlsWriter { socket: writer, session, outgoing: Vec::new() };
                (PeerReader::Tls(Box::new(reader)), PeerWriter::Tls(Box::new(writer)))
            }
        }
    }
}

impl StreamIo for PeerStream {
    async fn read_into(&mut self, input: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            PeerStream::Plain(socket) => socket.read_into(input).await,
            PeerStream::Tls(tls) => tls.read_into(input).await,
        }
    }

    async fn write_from(&mut self, output: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            PeerStream::Plain(socket) => socket.write_from(output).await,
            PeerStream::Tls(tls) => tls.write_from(output).await,
        }
    }
}

/// The half of a peer connection that reads.
pub(crate) enum PeerReader {
    Plain(OwnedReadHalf<TcpStream>),
    Tls(Box<TlsReader>),
}

pub(crate) struct TlsReader {
    socket: OwnedReadHalf<TcpStream>,
    session: Rc<RefCell<Connection>>,
    ciphertext: Vec<u8>,
    writer_signal: Rc<Signal>,
}

impl PeerReader {
    /// Appends what arrives to `input`, past its length: how many bytes, 0 at the end.
    pub(crate) async fn read_into(&mut self, input: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            PeerReader::Plain(socket) => {
                use monoio::buf::IoBufMut;
                use monoio::io::AsyncReadRent;
                let length = input.len();
                let (result, slice) = socket.read(input.slice_mut(length..)).await;
                (result, slice.into_inner())
            }
            PeerReader::Tls(tls) => tls.read_into(input).await,
        }
    }
}

impl TlsReader {
    async fn read_into(&mut self, mut input: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            match take_plaintext(&mut self.session.borrow_mut(), &mut input) {
                Ok(Some(read)) => return (Ok(read), input),
                Ok(None) => {}
                Err(error) => return (Err(error), input),
            }
            let (result, buffer) =
                read_ciphertext(&mut self.socket, std::mem::take(&mut self.ciphertext)).await;
            self.ciphertext = buffer;
            let read = match result {
                Ok(0) => return (Ok(0), input),
                Ok(read) => read,
                Err(error) => return (Err(error), input),
            };
            let mut session = self.session.borrow_mut();
            let absorbed = absorb(&mut session, &self.ciphertext[..read]);
            if session.wants_write() {
                self.writer_signal.raise();
            }
            if let Err(error) = absorbed {
                return (Err(error), input);
            }
        }
    }
}

/// The half of a peer connection that writes.
pub(crate) enum PeerWriter {
    Plain(OwnedWriteHalf<TcpStream>),
    Tls(Box<TlsWriter>),
}

pub(crate) struct TlsWriter {
    socket: OwnedWriteHalf<TcpStream>,
    session: Rc<RefCell<Connection>>,
    outgoing: Vec<u8>,
}

impl PeerWriter {
    /// Writes all of `output` (after what the session had to send), and hands it back.
    pub(crate) async fn write_all(&mut self, output: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            PeerWriter::Plain(socket) => {
                let (result, output) = socket.write_all(output).await;
                (result.map(drop), output)
            }
            PeerWriter::Tls(tls) => tls.write_all(output).await,
        }
    }

    /// Sends what the session has for the peer beyond any message (nothing when plain).
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        match self {
            PeerWriter::Plain(_) => Ok(()),
            PeerWriter::Tls(tls) => tls.write_all(Vec::new()).await.0,
        }
    }
}

impl TlsWriter {
    async fn write_all(&mut self, output: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut offset = 0;
        loop {
            self.outgoing.clear();
            {
                let mut session = self.session.borrow_mut();
                if offset < output.len() {
                    match session.writer().write(&output[offset..]) {
                        Ok(accepted) => offset += accepted,
                        Err(error) => return (Err(error), output),
                    }
                }
                while session.wants_write() {
                    if let Err(error) = session.write_tls(&mut self.outgoing) {
                        return (Err(error), output);
                    }
                }
            }
            if !self.outgoing.is_empty() {
                let (result, buffer) =
                    self.socket.write_all(std::mem::take(&mut self.outgoing)).await;
                self.outgoing = buffer;
                if let Err(error) = result {
                    return (Err(error), output);
                }
            }
            if offset == output.len() {
                return (Ok(()), output);
            }
        }
    }
}
