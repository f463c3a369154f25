//! Shared by the integration test binaries: a real `ember serve` driven over HTTP.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PROJECT: &str = "0123456789abcdef0123456789abcdef";

pub struct Agent {
    child: Child,
    port: u16,
    data_dir: PathBuf,
}

impl Agent {
    pub fn start(data_dir: &Path) -> Agent {
        Self::start_with(data_dir, None)
    }

    /// Starts `ember serve` on `data_dir`, with a TOML configuration when given.
    /// A free port is only free until someone takes it: tests running side by side
    /// can be handed the same one, so the agent counts as started only when its own
    /// log says it serves on that port, and an agent that could not bind is started
    /// again on another.
    pub fn start_with(data_dir: &Path, config: Option<&str>) -> Agent {
        let mut args: Vec<String> = vec!["serve".into(), "--data-dir".into(), data_dir.to_str().unwrap().into()];
        // These tests export nothing: no target, so no tgtd is started on the host
        // (a test that exports says which target it uses).
        let mut text = config.unwrap_or_default().to_string();
        if !text.contains("[target]") {
            text.push_str("\n[target]\niscsi = \"none\"\nnvme = \"none\"\n");
        }
        let path = data_dir.join("ember.toml");
        std::fs::write(&path, text).unwrap();
        args.extend(["--config".to_string(), path.display().to_string()]);
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log_path = data_dir.join(format!("agent-{port}.log"));
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_ember"))
                .args(&args)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start ember");
            let serving = format!("listen=127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break; // could not bind (or failed): try another port
                }
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains(&serving) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Agent { child, port, data_dir: data_dir.to_path_buf() };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            assert!(log.contains("listen on"), "ember did not start on {port}:\n{log}");
        }
        panic!("ember could not find a free port in 5 tries");
    }

    /// The agent's `/v3` URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v3", self.port)
    }

    /// The data dir the agent serves.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// One HTTP/1.1 request; returns the status and the JSON body (Null if empty).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>, version: Option<&str>) -> (u16, Value) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} /v3/{PROJECT}{path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Auth-Token: admin:{PROJECT}\r\n\
             Connection: close\r\nContent-Length: {}\r\n",
            self.port,
            payload.len()
        );
        if !payload.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        if let Some(v) = version {
            head.push_str(&format!("OpenStack-API-Version: volume {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(payload.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw);
        let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, if body.is_empty() { Value::Null } else { serde_json::from_str(body).unwrap() })
    }

    pub fn wait_status(&self, kind: &str, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        let key = kind.trim_end_matches('s');
        loop {
            let (code, body) = self.call("GET", &format!("/{kind}/{id}"), None, None);
            if want == "gone" && code == 404 {
                return Value::Null;
            }
            assert_eq!(code, 200, "{body}");
            if body[key]["status"] == want {
                return body[key].clone();
            }
            assert!(Instant::now() < deadline, "{kind} {id} stuck at {}", body[key]["status"]);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown path runs, as in a crash or power loss of the agent.
    pub fn crash(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "ember exited with {status}");
        let log = std::fs::read_to_string(self.data_dir.join(format!("agent-{}.log", self.port))).unwrap();
        assert!(!log.contains("panicked"), "{log}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn loop_devices() -> usize {
    std::fs::read_dir("/sys/block").unwrap().flatten().filter(|e| e.path().join("loop/backing_file").exists()).count()
}
