//! The `natter` command-line client against a real server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use natter_client::cli::{CliConfig, load_config, save_config};
use serde_json::json;

use crate::harness::{Raw, Server, temp_dir, text};

/// `natter listen` with a config file, its stdout lines handed over as they come.
struct Listen {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Listen {
    fn start(config: &std::path::Path) -> Listen {
        let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
            .arg("listen")
            .arg("--client-config")
            .arg(config)
            .env("NATTER_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn natter listen");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Listen { child, lines }
    }

    /// Lines until one that contains `marker` (included), or a panic after 10 s.
    fn lines_until(&self, marker: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no {marker:?} within 10 s; got {seen:?}"));
            let done = line.contains(marker);
            seen.push(line);
            if done {
                return seen;
            }
        }
    }

    /// SIGTERM, as a service manager stops it; it must exit cleanly within 10 s.
    fn terminate(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill only sends a signal to the child this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "listen exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("listen did not stop within 10 s of SIGTERM");
    }
}

/// Stopped by SIGTERM (a service manager, `kill`, `timeout`) as by Ctrl-C, `listen` saves where it
/// is, and the next `listen` prints only what came since.
#[tokio::test]
async fn listen_resumes_where_a_terminated_listen_stopped() {
    let server = Server::start("cli-listen", &[]);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut a = Raw::connect(&server, &alice.token).await;
    let direct = a.create_direct(bob.user.id).await;
    let send = |n: u32, body: &str| json!({"type": "send", "conversation_id": direct, "client_msg_id": format!("m-{n}"), "content": text(body)});
    a.call(send(1, "before the first listen")).await.unwrap();

    let config = temp_dir("cli-listen-config").join("bob.json");
    save_config(
        &config,
        &CliConfig {
            server: server.url(),
            token: bob.token.clone(),
            user: bob.user.clone(),
            state: None,
        },
    )
    .unwrap();

    let first = Listen::start(&config);
    let lines = first.lines_until("up to date");
    assert!(
        lines.iter().any(|l| l.contains("before the first listen")),
        "{lines:?}"
    );
    first.terminate();
    let saved = load_config(&config).unwrap().state.expect("a saved state");
    assert_eq!(saved.delivered(direct), 1);

    a.call(send(2, "while no one listened")).await.unwrap();
    let second = Listen::start(&config);
    let lines = second.lines_until("up to date");
    assert!(
        lines.iter().any(|l| l.contains("while no one listened")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("before the first listen")),
        "{lines:?}"
    );
    second.terminate();
}
