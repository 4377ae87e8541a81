//! A WebSocket client that speaks the canvas protocol, for tests that talk to a gateway as a browser does.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for any one frame.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_req: u64,
}

impl WsClient {
    /// Connects and returns the client with its first frame (the snapshot) unread.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_request(url.into_client_request()?).await
    }

    /// Connects with extra headers (e.g. `Authorization`).
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                http_name(name)?,
                value
                    .parse()
                    .map_err(|e| anyhow!("bad header value: {e}"))?,
            );
        }
        Self::connect_request(request).await
    }

    async fn connect_request(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> anyhow::Result<Self> {
        let (stream, _) =
            tokio::time::timeout(RECV_TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .context("connect timed out")??;
        Ok(Self {
            stream,
            next_req: 0,
        })
    }

    /// Connects and reads the snapshot.
    pub async fn join(url: &str) -> anyhow::Result<(Self, Value)> {
        let mut client = Self::connect(url).await?;
        let snapshot = client.recv_type("snapshot").await?;
        Ok((client, snapshot))
    }

    pub async fn send_text(&mut self, text: impl Into<String>) -> anyhow::Result<()> {
        self.stream.send(Message::Text(text.into().into())).await?;
        Ok(())
    }

    pub async fn send(&mut self, value: &Value) -> anyhow::Result<()> {
        self.send_text(value.to_string()).await
    }

    /// The next text frame as JSON.
    pub async fn recv(&mut self) -> anyhow::Result<Value> {
        self.recv_within(RECV_TIMEOUT).await
    }

    pub async fn recv_within(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        loop {
            let msg = tokio::time::timeout(timeout, self.stream.next())
                .await
                .context("no frame arrived in time")?
                .ok_or_else(|| anyhow!("socket closed"))??;
            match msg {
                Message::Text(text) => return Ok(serde_json::from_str(&text)?),
                Message::Close(frame) => bail!("socket closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame of this `type`, skipping others.
    pub async fn recv_type(&mut self, kind: &str) -> anyhow::Result<Value> {
        loop {
            let v = self.recv().await?;
            if v["type"] == kind {
                return Ok(v);
            }
        }
    }

    /// Sends `message` with a fresh `reqId` and returns the reply carrying it (skipping broadcasts).
    pub async fn request(&mut self, mut message: Value) -> anyhow::Result<Value> {
        self.next_req += 1;
        let req_id = format!("r{}", self.next_req);
        message["reqId"] = Value::String(req_id.clone());
        self.send(&message).await?;
        loop {
            let v = self.recv().await?;
            if v["reqId"] == req_id.as_str() {
                return Ok(v);
            }
        }
    }

    /// Waits for the server to close the socket; returns its close frame.
    pub async fn closed(&mut self) -> anyhow::Result<Option<CloseFrame>> {
        loop {
            let msg = tokio::time::timeout(RECV_TIMEOUT, self.stream.next())
                .await
                .context("socket stayed open")?;
            match msg {
                None => return Ok(None),
                Some(Err(_)) => return Ok(None),
                Some(Ok(Message::Close(frame))) => return Ok(frame),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Nothing arrives for `quiet`.
    pub async fn assert_silent(&mut self, quiet: Duration) -> anyhow::Result<()> {
        match tokio::time::timeout(quiet, self.stream.next()).await {
            Err(_) => Ok(()),
            Ok(Some(Ok(Message::Text(t)))) => bail!("unexpected frame: {t}"),
            Ok(other) => bail!("unexpected socket event: {other:?}"),
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }

    pub fn inner(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.stream
    }
}

fn http_name(name: &str) -> anyhow::Result<tokio_tungstenite::tungstenite::http::HeaderName> {
    name.parse().map_err(|e| anyhow!("bad header name: {e}"))
}
