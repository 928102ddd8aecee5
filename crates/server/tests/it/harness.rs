//! Starting a real `natter serve` process on an ephemeral port, and clients that talk to it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use natter_client::RestClient;
use natter_proto::{LoginResponse, RegisterRequest, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty directory for one test's data.
pub fn temp_dir(name: &str) -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("natter-it-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A running server process.
pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub port: u16,
    args: Vec<String>,
    /// The open-file limit to start the process with, if not inherited.
    open_files_max: Option<u64>,
}

impl Server {
    /// Start on a fresh data directory with extra `natter serve` flags.
    pub fn start(name: &str, args: &[&str]) -> Server {
        let data_dir = temp_dir(name);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut server = Server {
            child: None,
            data_dir,
            port: 0,
            args,
            open_files_max: None,
        };
        server.spawn();
        server
    }

    /// Start with a low open-file limit, to run out of file descriptors on purpose.
    pub fn start_with_open_files_max(name: &str, args: &[&str], open_files_max: u64) -> Server {
        let mut server = Server {
            child: None,
            data_dir: temp_dir(name),
            port: 0,
            args: args.iter().map(|s| s.to_string()).collect(),
            open_files_max: Some(open_files_max),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let mut command = Command::new(env!("CARGO_BIN_EXE_natter"));
        if let Some(limit) = self.open_files_max {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches only the child being started.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .arg("serve")
            .args(["--listen", &listen])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env("NATTER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn natter serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        self.port = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://127.0.0.1:{}/v1/ws?token={token}", self.port)
    }

    /// `kill -9`: no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        // The port was ours a moment ago; retry briefly in case the OS has not released it.
        for _ in 0..50 {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
            if result.is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server did not restart on port {}", self.port);
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        child.wait().expect("wait")
    }

    pub fn rest(&self) -> RestClient {
        RestClient::new(&self.url()).expect("rest client")
    }

    /// Register a user and return their first device's login.
    pub async fn register(&self, username: &str) -> LoginResponse {
        self.rest()
            .register(&RegisterRequest {
                username: username.into(),
                password: "password-1".into(),
                display_name: None,
                device_name: Some("test".into()),
            })
            .await
            .expect("register")
    }

    /// Another device of an existing user.
    pub async fn login(&self, username: &str) -> LoginResponse {
        self.rest()
            .login(&natter_proto::LoginRequest {
                username: username.into(),
                password: "password-1".into(),
                device_name: Some("second".into()),
            })
            .await
            .expect("login")
    }

    pub async fn metrics(&self) -> String {
        http_get(self.port, "/metrics").await.1
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A bare HTTP/1.1 GET; returns the status and the body.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    http_exchange(port, request).await
}

/// A bare HTTP/1.1 POST of a JSON body; returns the status and the body.
pub async fn http_post_json(port: u16, path: &str, body: &str) -> (u16, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_exchange(port, request).await
}

async fn http_exchange(port: u16, request: String) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A raw WebSocket client: it sends exactly the bytes a test wants, good or bad.
pub struct Raw {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Raw {
    pub async fn connect(server: &Server, token: &str) -> Raw {
        let mut raw = Raw::connect_without_hello(server, token).await;
        let hello = raw.next_frame().await;
        assert!(matches!(hello, ServerFrame::Hello(_)), "{hello:?}");
        raw
    }

    /// Connected, the `hello` not read yet: for a client that sends before it arrives.
    pub async fn connect_without_hello(server: &Server, token: &str) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url(token))
            .await
            .expect("websocket connect");
        Raw { ws, next_id: 0 }
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(WsMessage::Text(text.into()))
            .await
            .expect("send");
    }

    /// Send one text frame whose payload is `bytes` as they are, UTF-8 or not.
    pub async fn send_text_bytes(&mut self, bytes: &[u8]) {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let frame = Frame::message(bytes.to_vec(), OpCode::Data(Data::Text), true);
        self.ws.send(WsMessage::Frame(frame)).await.expect("send");
    }

    /// Send a command; returns its request id.
    pub async fn command(&mut self, mut command: serde_json::Value) -> u64 {
        self.next_id += 1;
        command["id"] = self.next_id.into();
        self.send_text(command.to_string()).await;
        self.next_id
    }

    /// The next frame, or a panic after 10 s.
    pub async fn next_frame(&mut self) -> ServerFrame {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s")
                .expect("connection open")
                .expect("frame");
            match message {
                WsMessage::Text(text) => {
                    return ServerFrame::decode_json(text.as_str()).expect("valid server frame");
                }
                WsMessage::Close(frame) => panic!("closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The reply to request `id`, skipping events.
    pub async fn reply(&mut self, id: u64) -> Result<serde_json::Value, natter_proto::ErrorBody> {
        loop {
            match self.next_frame().await {
                ServerFrame::Result { id: got, data } if got == id => return Ok(data),
                ServerFrame::Error {
                    id: Some(got),
                    error,
                } if got == id => return Err(error),
                _ => continue,
            }
        }
    }

    /// Send a command and wait for its reply.
    /// Open (or find) the direct conversation with `user_id`; its id.
    pub async fn create_direct(&mut self, user_id: u64) -> u64 {
        let direct = self
            .call(serde_json::json!({"type": "create_direct", "user_id": user_id}))
            .await
            .expect("create_direct");
        direct["id"].as_u64().expect("a conversation id")
    }

    pub async fn call(
        &mut self,
        command: serde_json::Value,
    ) -> Result<serde_json::Value, natter_proto::ErrorBody> {
        let id = self.command(command).await;
        self.reply(id).await
    }

    /// Frames until one matches, or a panic after 10 s.
    pub async fn expect_event(
        &mut self,
        mut want: impl FnMut(&ServerFrame) -> bool,
    ) -> ServerFrame {
        loop {
            let frame = self.next_frame().await;
            if want(&frame) {
                return frame;
            }
        }
    }

    /// Whether any frame matching arrives within `wait`.
    pub async fn sees_within(
        &mut self,
        wait: Duration,
        mut want: impl FnMut(&ServerFrame) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Ok(Some(Ok(WsMessage::Text(text)))) => {
                    if let Ok(frame) = ServerFrame::decode_json(text.as_str())
                        && want(&frame)
                    {
                        return true;
                    }
                }
                Ok(Some(Ok(_))) => continue,
                _ => return false,
            }
        }
    }

    /// The next WebSocket message of any kind, pings included, within `wait`; `None` if none
    /// came or the connection ended. (Reading a ping queues its pong, written on a later read.)
    pub async fn next_message(&mut self, wait: Duration) -> Option<WsMessage> {
        match tokio::time::timeout(wait, self.ws.next()).await {
            Ok(Some(Ok(message))) => Some(message),
            _ => None,
        }
    }

    /// Read until the server closes; the close code it sent.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), self.ws.next()).await {
                Ok(Some(Ok(WsMessage::Close(frame)))) => return frame.map(|f| f.code.into()),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }
}

/// A text message's JSON content.
pub fn text(s: &str) -> serde_json::Value {
    serde_json::json!({"type": "text", "text": s})
}
