//! The WebSocket under a connection. The upgrade handshake (RFC 6455) is done here rather than by axum's extractor
//! so that the connection owns tungstenite's stream and can send a big message as a run of bounded frames (one
//! fragmented message): tungstenite copies each frame it sends into the socket's write buffer and keeps that
//! buffer's capacity, so a 32 MiB snapshot sent as one frame would cost every socket that ever got one 32 MiB for
//! the rest of its life, and a join burst of 50 sockets on a big project a gigabyte and a half.

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::SinkExt;
use hyper_util::rt::TokioIo;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::{Role, WebSocketConfig};
use ws_stream::WebSocketStream;

pub(crate) use tungstenite::protocol::CloseFrame;
pub(crate) use tungstenite::{Message, Utf8Bytes};

/// An upgraded socket.
pub(crate) type WebSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Why a socket's read or write failed.
pub(crate) type SocketError = tungstenite::Error;

/// A message sent in fragments goes out in frames of about this size.
pub(crate) const FRAGMENT_BYTES: usize = 64 * 1024;

/// A request to upgrade to a WebSocket, checked like axum's extractor does (same refusals).
pub(crate) struct WebSocketUpgrade {
    config: WebSocketConfig,
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// A request that cannot be upgraded.
#[derive(Debug)]
pub(crate) enum UpgradeRejection {
    MethodNotGet,
    ConnectionHeader,
    UpgradeHeader,
    VersionHeader,
    KeyMissing,
    NotUpgradable,
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::MethodNotGet => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Request method must be `GET`",
            ),
            Self::ConnectionHeader => (
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            ),
            Self::UpgradeHeader => (
                StatusCode::BAD_REQUEST,
                "`Upgrade` header did not include 'websocket'",
            ),
            Self::VersionHeader => (
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` header did not include '13'",
            ),
            Self::KeyMissing => (
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` header missing",
            ),
            Self::NotUpgradable => (
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ),
        };
        (status, message).into_response()
    }
}

fn header_is(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(&name)
        .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_contains(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(&name)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.to_ascii_lowercase().contains(value))
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(UpgradeRejection::MethodNotGet);
        }
        if !header_contains(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(UpgradeRejection::ConnectionHeader);
        }
        if !header_is(&parts.headers, header::UPGRADE, "websocket") {
            return Err(UpgradeRejection::UpgradeHeader);
        }
        if !header_is(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(UpgradeRejection::VersionHeader);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(UpgradeRejection::KeyMissing)?;
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(UpgradeRejection::NotUpgradable)?;
        Ok(Self {
            config: WebSocketConfig::default(),
            key,
            on_upgrade,
        })
    }
}

impl WebSocketUpgrade {
    pub(crate) fn max_frame_size(mut self, max: usize) -> Self {
        self.config.max_frame_size = Some(max);
        self
    }

    pub(crate) fn max_message_size(mut self, max: usize) -> Self {
        self.config.max_message_size = Some(max);
        self
    }

    pub(crate) fn read_buffer_size(mut self, size: usize) -> Self {
        self.config.read_buffer_size = size;
        self
    }

    pub(crate) fn write_buffer_size(mut self, size: usize) -> Self {
        self.config.write_buffer_size = size;
        self
    }

    pub(crate) fn max_write_buffer_size(mut self, max: usize) -> Self {
        self.config.max_write_buffer_size = max;
        self
    }

    /// Answers 101 and runs `callback` on the socket once the connection is handed over.
    pub(crate) fn on_upgrade<C, F>(self, callback: C) -> Response
    where
        C: FnOnce(WebSocket) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            config,
            key,
            on_upgrade,
        } = self;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let socket = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            callback(socket).await;
        });
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (
                    header::SEC_WEBSOCKET_ACCEPT,
                    HeaderValue::from_str(&accept).unwrap_or(HeaderValue::from_static("")),
                ),
            ],
        )
            .into_response()
    }
}

/// Sends the concatenation of `parts` as one text message in frames of about [`FRAGMENT_BYTES`] (a part is never
/// split, so each frame is whole UTF-8), each flushed before the next is built: neither this connection nor the
/// socket's write buffer ever holds more than a fragment, however big the message. The parts must make valid UTF-8.
pub(crate) async fn send_fragmented<S>(sink: &mut S, parts: &[&str]) -> Result<(), SocketError>
where
    S: futures_util::Sink<Message, Error = SocketError> + Unpin,
{
    let mut buffer = bytes::BytesMut::with_capacity(FRAGMENT_BYTES * 2);
    let mut ready: Option<Bytes> = None;
    let mut first = true;
    let send = |payload: Bytes, last: bool, first: &mut bool| {
        let opcode = if *first {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        *first = false;
        Message::Frame(Frame::message(payload, opcode, last))
    };
    for part in parts {
        buffer.extend_from_slice(part.as_bytes());
        if buffer.len() >= FRAGMENT_BYTES {
            if let Some(previous) = ready.take() {
                sink.send(send(previous, false, &mut first)).await?;
            }
            ready = Some(buffer.split().freeze());
        }
    }
    let last = match ready.take() {
        Some(previous) if buffer.is_empty() => previous,
        Some(previous) => {
            sink.send(send(previous, false, &mut first)).await?;
            buffer.split().freeze()
        }
        None => buffer.split().freeze(),
    };
    sink.send(send(last, true, &mut first)).await
}
